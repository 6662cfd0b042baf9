"""Batches: requests sorted by length, longest first, cut under the backend's token budget, scored
batch by batch, each finished batch saved before the next; on out-of-memory the budget halves and the
job goes on.

Longest first, as lm-evaluation-harness does: an out-of-memory error shows on the first batch, and
time estimates err high.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional

import torch

from persona_bench.backends.base import Backend
from persona_bench.config.errors import ConfigError
from persona_bench.scoring.cloze import packed_length
from persona_bench.scoring.requests import Request, Result

if TYPE_CHECKING:
    from persona_bench.run.items import Item
    from persona_bench.run.job import Job

log = logging.getLogger(__name__)


def request_cost(r: Request) -> int:
    """Padded tokens one request adds to a batch: its prompt plus one row per option."""
    return len(r.prompt_ids) + option_cost(r)


def option_cost(r: Request) -> int:
    """Padded tokens of a request's option rows (cloze through the prompt's cache): options x the longest."""
    return len(r.option_ids) * max((len(o) for o in r.option_ids), default=0)


def make_batches(requests: list[Request], budget: int, subset: Optional[list[int]] = None, extra: int = 0,
                 packed: bool = False) -> list[list[int]]:
    """Indices of requests (all, or `subset`) in batches, longest first, each within `budget` padded tokens.

    By default a batch costs rows x (its widest prompt + `extra`: the tokens generation adds), plus every
    row's option rows (cloze through the prompt's cache); sorting by the prompt's own length keeps the
    prompt pass's padding small. `packed` (causal cloze, scoring.cloze.packed_length): a row holds its
    prompt and its options, and a batch costs rows x its widest packed row. An over-long single request
    gets its own batch."""
    pool = range(len(requests)) if subset is None else subset
    if packed:
        width = {i: packed_length(requests[i]) for i in pool}
        options = dict.fromkeys(pool, 0)
    else:
        width = {i: len(requests[i].prompt_ids) + extra for i in pool}
        options = {i: option_cost(requests[i]) for i in pool}
    order = sorted(pool, key=lambda i: (-width[i], -options[i], i))
    batches: list[list[int]] = []
    batch: list[int] = []
    widest = cost = 0
    for i in order:
        if batch and (len(batch) + 1) * widest + cost + options[i] > budget:
            batches.append(batch)
            batch, cost = [], 0
        if not batch:
            widest = width[i]  # the widest of its batch: the order is widest first
        batch.append(i)
        cost += options[i]
    if batch:
        batches.append(batch)
    return batches


def is_out_of_memory(e: BaseException) -> bool:
    """A CUDA or CPU allocation failure (torch raises OutOfMemoryError on CUDA, RuntimeError on CPU)."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def score_items(backend: Backend, items: list["Item"], job: "Job", done: dict[int, Result],
                save: Callable[[list[int], list[Result]], None]) -> tuple[list[Result], dict]:
    """Score (or, for method=generate, answer) the items not in `done`, batch by batch, handing each
    finished batch to `save`. Returns every item's Result in item order, and the timing.

    Batches are cut from the whole grid as in an uninterrupted run (so a resumed job scores the
    same batches), minus what is done. On out-of-memory the batch budget halves, with a warning,
    for this batch and the rest of the job; no prompt is lost."""
    from tqdm import tqdm

    cfg, method = job.cfg, job.method
    requests = [it.request for it in items]
    budget = backend.batch_budget(method)
    if not cfg.model.batch_tokens:
        log.info("batch budget %d tokens (model.batch_tokens=0: chosen from free memory on %s)", budget,
                 backend.info.get("device"))
    extra = cfg.scoring.generate.max_new_tokens if method == "generate" else 0
    packed = backend.packed_rows(method)
    queue = deque(b for b in ([i for i in batch if i not in done] for batch in make_batches(requests, budget, extra=extra, packed=packed)) if b)
    results: dict[int, Result] = dict(done)
    n_tokens = n_scored = n_batches = 0
    t0 = time.perf_counter()
    with tqdm(total=len(items), initial=len(done), unit="prompt", disable=not cfg.progress, desc=cfg.model.name,
              smoothing=0.1) as bar:
        while queue:
            batch = queue.popleft()
            reqs = [requests[i] for i in batch]
            try:
                if method == "generate":
                    scored = backend.generate(reqs, cfg.scoring.generate)
                else:
                    scored = backend.score(reqs, method, budget)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                backend.free_memory()
                if len(batch) == 1:
                    raise ConfigError(f"one prompt of {len(reqs[0].prompt_ids)} tokens does not fit in memory "
                                      f"(model {cfg.model.name}); use quantization, a smaller model or a device with more memory: {e}") from None
                budget = max(1, min(budget, sum((packed_length(r) if packed else request_cost(r)) + extra for r in reqs)) // 2)
                log.warning("out of memory on a batch of %d prompts; retrying with batch budget %d tokens for the "
                            "rest of the job (set model.batch_tokens=%d to start there)", len(batch), budget, budget)
                queue = deque(make_batches(requests, budget, batch + [i for b in queue for i in b], extra, packed))
                continue
            save(batch, scored)
            results.update(zip(batch, scored))
            n_tokens += sum(r.cost for r in reqs) + sum(x.n_new_tokens or 0 for x in scored)
            n_scored += len(batch)
            n_batches += 1
            bar.update(len(batch))
    seconds = time.perf_counter() - t0
    timing = {
        "seconds": round(seconds, 2),
        "batches": n_batches,
        "prompts_scored": n_scored,
        "prompts_resumed": len(done),
        "batch_tokens": budget,
        "tokens": n_tokens,
        "prompts_per_s": round(n_scored / seconds, 2) if n_scored and seconds else None,
        "tokens_per_s": round(n_tokens / seconds, 1) if n_scored and seconds else None,
    }
    return [results[i] for i in range(len(items))], timing
