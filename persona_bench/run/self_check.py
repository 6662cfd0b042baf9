"""The numerical self-check of every run: a seeded sample of its prompts scored again on the backend's
reference path (backends.base.Backend.reference: fp32 where memory allows, batch 1, no padding, no
packing, no cache rows shared between options), while the model is still loaded, and compared with the run's own results.

    check = self_check(job, backend, items, results)     # summary.json's "self_check"; None when off

It measures the numerical noise floor of the run's fast path (batching, padding, packed cloze rows,
fused norms, bf16): the share of the sampled prompts whose predicted answer is the same, and the
largest difference of an option's probability. A persona effect smaller than that floor is noise.
Generate runs check the labels' logit answer on the same prompt, not the generated text. Nothing
here changes the run's results. scoring.self_check (a share of the prompts; 0 = off) and
scoring.self_check_min (at least this many, at most all) size the sample.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Optional

from persona_bench.backends.base import Backend
from persona_bench.scoring.reference import compare
from persona_bench.scoring.requests import Result

if TYPE_CHECKING:
    from persona_bench.run.items import Item
    from persona_bench.run.job import Job

log = logging.getLogger(__name__)

WARN_AGREEMENT = 0.95  # below this share of identical answers the log warns


def sample_size(n_items: int, share: float, at_least: int) -> int:
    """share x the prompts, rounded, but at least `at_least` and at most all; 0 when share is 0."""
    if share <= 0 or n_items <= 0:
        return 0
    return min(n_items, max(at_least, round(share * n_items)))


def sample(n_items: int, size: int, seed: int) -> list[int]:
    """`size` distinct item indices drawn with `seed` (the same job draws the same prompts), in order."""
    return sorted(random.Random(f"self-check:{seed}").sample(range(n_items), size))


def self_check(job: "Job", backend: Backend, items: list["Item"], results: list[Result]) -> Optional[dict]:
    """Re-score a sample of the run's prompts on the backend's reference path; the comparison, for
    summary.json. None when scoring.self_check is 0. A failure of the check is recorded (and logged),
    never raised: the run's results are already complete."""
    s = job.cfg.scoring
    method = job.method
    usable = [i for i, it in enumerate(items) if method != "generate" or it.request.label_ids]  # generate: labels needed
    n = sample_size(len(usable), s.self_check, s.self_check_min)
    if n == 0:
        return None
    picked = [usable[k] for k in sample(len(usable), n, job.cfg.seed)]
    out = {"n": n, "share": s.self_check, "method": "letter" if method == "generate" else method,
           "dtype_run": backend.info.get("dtype"), "quantization_run": backend.info.get("quantization", "none")}
    t0 = time.perf_counter()
    try:
        ref = backend.reference([items[i].request for i in picked], method)
        cmp = compare([results[i] for i in picked], ref.results) if ref is not None else None
    except Exception as e:  # noqa: BLE001 - e.g. out of memory at batch 1: say so, keep the results
        log.warning("the numerical self-check failed (%s: %s); the results are saved", type(e).__name__, e)
        return {**out, "path": "failed", "error": f"{type(e).__name__}: {str(e)[:300]}", "agreement": None,
                "max_prob_diff": None}
    if ref is None:
        name = backend.info.get("backend") or type(backend).__name__
        log.info("numerical self-check: not available with the %s backend", name)
        return {**out, "path": f"not available ({name} backend)", "agreement": None, "max_prob_diff": None}
    out.update(path=ref.path, dtype_reference=ref.dtype, reference=ref.note, **cmp,
               seconds=round(time.perf_counter() - t0, 2))
    if cmp["agreement"] is not None:
        level = logging.WARNING if cmp["agreement"] < WARN_AGREEMENT else logging.INFO
        log.log(level, "numerical self-check: %d prompts re-scored (%s; %s): the same answer on %.1f%%, largest "
                "option-probability difference %.2g (run: %s)", cmp["n_compared"], ref.path, ref.note,
                100 * cmp["agreement"], cmp["max_prob_diff"], out["dtype_run"])
    return out
