"""What each optimization of the scoring path gains: the same prompts scored with one of them undone.

    python benchmarks/ablations.py                      # the demo's cloze scoring, about 120 prompts
    python benchmarks/ablations.py --n-prompts 200 scoring=letter
    python benchmarks/ablations.py --n-prompts 16 --json /tmp/ablations.json   # a quick look

Variants (each against `full`, the path `run.py` uses, measured in the same process):

  unfused_norms     transformers' own RMS-norm modules (models.fastpath.fuse_norms undone)
  unsorted_batches  batches cut in grid order under the same token budget (run.batching.make_batches
                    replaced; more padding; on a sample of the run's batches this understates it:
                    the padding shares of the whole grid's batches are printed first)
  head_one_matmul   the output layer as one matmul over the whole vocabulary (scoring.logits.head_logits
                    with one block, as scoring.letter and scoring.cloze call it)
  cached_options    causal cloze only: the options through the prompt's shared KV cache instead of
                    one packed row per prompt (scoring.cloze.packing_works answers False)
  full_logits       causal letter only: the output layer at every position (what a plain forward does)
  per_prompt_tokenization  cloze only: every prompt's options tokenized after it (build time;
                    run.items.option_tokens replaced)

Each variant patches the module attribute its caller looks up, while `full`'s prompts are scored
again. Prints prompts/s per variant, its time relative to `full`, how often the replaced code ran
(`calls`: norm modules undone for unfused_norms; a 0 means the patch missed the scoring path, and
a warning says so), and whether its predictions equal `full`'s (they must: every optimization
keeps results).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch

# throughput.py is this script's neighbour in benchmarks/, which Python puts first on sys.path when a
# script of that folder runs.
from throughput import compose, sample_batches


@contextmanager
def patched(module, name: str, value, calls: list):
    """module.<name> replaced by `value` while the block runs; each call of the replacement is counted in
    `calls`, so a variant whose replacement is never reached (the name looked up elsewhere) shows."""
    old = getattr(module, name)

    def counted(*a, **k):
        calls.append(name)
        return value(*a, **k)

    setattr(module, name, counted)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextmanager
def unfused(model, calls: list):
    """The norm modules that models.fastpath.fuse_norms gave a fused forward (an instance attribute) back on
    their class's own forward; `calls` gets one entry per module undone."""
    fused = [m for m in model.modules() if "forward" in vars(m) and hasattr(m, "weight")]
    saved = {m: vars(m)["forward"] for m in fused}
    for m in fused:
        del m.forward
    calls.extend(type(m).__name__ for m in fused)
    try:
        yield
    finally:
        for m, f in saved.items():
            m.forward = f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=120,
                    help="about this many prompts, as whole batches of the run spread from longest to shortest")
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py (model=..., scoring=..., device=...)")
    args = ap.parse_args()

    from persona_bench.backends import hf, load_backend
    from persona_bench.run import batching
    from persona_bench.run import items as items_mod
    from persona_bench.run.batching import request_cost, score_items
    from persona_bench.run.items import build_items
    from persona_bench.run.job import Job
    from persona_bench.scoring import cloze, letter
    from persona_bench.scoring.logits import head_logits, label_matrix, left_pad

    cfg = compose(args.overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    job = Job.prepare(cfg)
    method, fmt = job.method, job.fmt
    backend = load_backend(cfg, method)
    job.bind(backend.tokenizer)
    model, info = backend.model, backend.info
    budget = backend.batch_budget(method)

    def build():
        t = time.perf_counter()
        items = build_items(job, backend.tokenizer)
        return items, time.perf_counter() - t

    all_items, build_s = build()
    packed = backend.packed_rows(method)
    items = sample_batches(all_items, budget, args.n_prompts, packed)
    score_items(backend, items[:4], job, {}, lambda b, r: None)  # warm-up

    def score():
        t = time.perf_counter()
        results, _ = score_items(backend, items, job, {}, lambda b, r: None)
        return [r.pred for r in results], time.perf_counter() - t

    def grid_order(requests, budget_, subset=None, extra=0, packed=False):
        pool = list(range(len(requests))) if subset is None else sorted(subset)
        cost = cloze.packed_length if packed else request_cost
        widest = max(cost(requests[i]) + extra for i in pool)
        rows = max(1, budget_ // max(1, widest))  # the same budget, rows fixed by the widest prompt
        return [pool[i : i + rows] for i in range(0, len(pool), rows)]

    @torch.inference_mode()
    def full_logits_letter(model_, requests, pad):
        ids, mask, pos = left_pad([r.prompt_ids for r in requests], pad, model_.device)
        logits = model_(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float()
        picked = logits.gather(1, label_matrix(requests, logits.device))
        return letter.letter_results(picked, torch.logsumexp(logits, -1), requests)

    one_matmul = _one_matmul_head(head_logits)

    def one_matmul_head(calls):  # letter and cloze each import head_logits: both names are patched
        return _all(patched(letter, "head_logits", one_matmul, calls), patched(cloze, "head_logits", one_matmul, calls))

    # name -> the change, given a list that counts how often it is reached; `full` is the path run.py takes.
    variants = {"full": lambda calls: _all()}
    variants["unfused_norms"] = lambda calls: unfused(model, calls)
    variants["unsorted_batches"] = lambda calls: patched(batching, "make_batches", grid_order, calls)
    variants["head_one_matmul"] = one_matmul_head
    if packed:  # the options through the prompt's shared KV cache instead of one packed pass
        variants["cached_options"] = lambda calls: patched(cloze, "packing_works", lambda *a: False, calls)
    if method == "letter" and backend.arch == "causal":  # hf.score_batch looks letter_causal up in its own module
        variants["full_logits"] = lambda calls: patched(hf, "letter_causal", full_logits_letter, calls)
    rows = []
    base_pred, base_s = None, None
    for name, make in variants.items():
        calls: list = []
        with make(calls):
            pred, seconds = score()
        if name == "full":
            base_pred, base_s = pred, seconds
        rows.append({"variant": name, "seconds": round(seconds, 2), "prompts_per_s": round(len(items) / seconds, 2),
                     "slowdown": round(seconds / base_s, 2), "same_predictions": pred == base_pred,
                     "calls": len(calls)})
    if method == "cloze":
        shared_s = min(build()[1], build_s)
        calls = []
        with patched(items_mod, "option_tokens", _per_prompt_option_tokens(), calls):
            per_prompt_items, per_prompt_s = build()
        same = [it.request.option_ids for it in per_prompt_items] == [it.request.option_ids for it in all_items]
        rows.append({"variant": "per_prompt_tokenization", "seconds": round(per_prompt_s, 2),
                     "prompts_per_s": round(len(all_items) / per_prompt_s, 1),
                     "slowdown": round(per_prompt_s / shared_s, 2), "same_predictions": same, "calls": len(calls),
                     "note": f"building and tokenizing all {len(all_items)} prompts ({shared_s:.2f} s shared)"})
    padding = padding_shares(all_items, budget, packed)
    print("prompt positions that are padding, whole grid (" + ", ".join(f"{k}: {v:.1%}" for k, v in padding.items()) + ")")
    print(f"{info['model']} {info['dtype']} on {info['device']}, {method}/{fmt}, {len(items)} prompts, "
          f"batch budget {budget} tokens, {torch.get_num_threads()} threads")
    print(f"{'variant':<26}{'seconds':>9}{'prompts/s':>11}{'x full':>8}{'calls':>7}  same predictions")
    for r in rows:
        print(f"{r['variant']:<26}{r['seconds']:>9}{r['prompts_per_s']:>11}{r['slowdown']:>8}{r['calls']:>7}  "
              f"{r['same_predictions']}" + (f"  ({r['note']})" if "note" in r else ""))
    idle = [r["variant"] for r in rows if r["variant"] != "full" and not r["calls"]]
    if idle:
        print(f"WARNING: never reached, so these rows measured the full path: {', '.join(idle)}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "method": method, "rows": rows, "padding": padding}, indent=2,
                                        default=str))


def padding_shares(items, budget: int, packed: bool = False) -> dict:
    """Share of the forward pass's positions that are padding over the whole grid (packed cloze rows, else
    the prompt pass), for the run's batches (sorted by that length), batches sorted by prompt plus
    option cost, and grid order."""
    from persona_bench.run.batching import make_batches, request_cost
    from persona_bench.scoring.cloze import packed_length

    requests = [it.request for it in items]
    length = packed_length if packed else (lambda r: len(r.prompt_ids))

    def share(batches):
        real = sum(length(requests[i]) for b in batches for i in b)
        return 1 - real / sum(len(b) * max(length(requests[i]) for i in b) for b in batches)

    def cut(order):
        out, i = [], 0
        while i < len(order):
            rows = max(1, budget // max(1, request_cost(requests[order[i]])))
            out.append(order[i : i + rows])
            i += rows
        return out

    by_cost = sorted(range(len(requests)), key=lambda i: (-request_cost(requests[i]), i))
    return {"run.py's order" + (" (packed rows, longest first)" if packed else " (by prompt length)"):
            share(make_batches(requests, budget, packed=packed)),
            "sorted by prompt + option cost": share(cut(by_cost)),
            "grid order": share(cut(list(range(len(requests)))))}


@contextmanager
def _all(*contexts):
    """Every context of `contexts` at once (none: the unchanged path)."""
    with contextlib.ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        yield


def _one_matmul_head(blocked):
    def head(model, hidden, ids, block=None):
        return blocked(model, hidden, ids, block=model.get_output_embeddings().weight.shape[0])
    return head


def _per_prompt_option_tokens():
    """run.items.option_tokens without the sharing: every prompt's options tokenized after it."""
    from persona_bench.scoring.tokens import suffix_ids

    def per_prompt(items, specials, ends, tokenizer, arch):
        for it, special in zip(items, specials):
            it.request.option_ids = [suffix_ids(tokenizer, it.prompt, it.request.prompt_ids, c, special) for c in it.choices]
    return per_prompt


if __name__ == "__main__":
    main()
