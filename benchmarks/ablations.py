"""What each optimization of the scoring path gains: the same prompts scored with one of them undone.

    python benchmarks/ablations.py                      # the demo's cloze scoring, 120 prompts
    python benchmarks/ablations.py --n-prompts 200 scoring=letter

Variants (each against `full`, the path `run.py` uses, measured in the same process):

  unfused_norms     transformers' own RMS-norm modules (persona_bench/models/fastpath.py undone)
  unsorted_batches  batches cut in grid order under the same token budget (more padding; on a
                    sample of the run's batches this understates it: the padding shares of the
                    whole grid's batches are printed first)
  head_one_matmul   the output layer as one matmul over the whole vocabulary (no blocks)
  full_logits       letter only: the output layer at every position (what a plain forward does)
  per_prompt_tokenization  cloze only: every prompt's options tokenized after it (build time)

Prints prompts/s per variant, its time relative to `full`, and whether its predictions equal
`full`'s (they must: every optimization keeps results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from throughput import compose, sample_batches  # noqa: E402


@contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextmanager
def unfused(model):
    fused = [m for m in model.modules() if "forward" in vars(m) and hasattr(m, "weight")]
    saved = {m: vars(m)["forward"] for m in fused}
    for m in fused:
        del m.forward
    try:
        yield
    finally:
        for m, f in saved.items():
            m.forward = f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=120)
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from persona_bench.config.schema import default_cache_dir
    from persona_bench.config.validate import resolved_scoring
    from persona_bench.inputs.prompts import resolve_placement
    from persona_bench.models.loading import load_model
    from persona_bench.run import runner
    from persona_bench.scoring import cloze as scoring

    cfg = compose(args.overrides)
    method, fmt = resolved_scoring(cfg)
    _, _, grid, questions = runner.prepare(cfg)
    model, tok, info = load_model(cfg.model, cfg.device, default_cache_dir(cfg.cache_dir))
    placement = resolve_placement(tok, cfg.model.placement)
    pad_id = next(x for x in (tok.pad_token_id, tok.eos_token_id, 0) if x is not None)

    def build():
        t = time.perf_counter()
        items = runner.build_items(questions, grid, tok, cfg, placement, method, fmt)
        return items, time.perf_counter() - t

    all_items, build_s = build()
    packed = runner.packs(cfg, method)
    items = sample_batches(all_items, cfg.model.batch_tokens or 4096, args.n_prompts, packed)
    runner.score_items(model, items[:4], cfg, method, pad_id, {}, lambda b, r: None)  # warm-up

    def score():
        t = time.perf_counter()
        results, _ = runner.score_items(model, items, cfg, method, pad_id, {}, lambda b, r: None)
        return [r.pred for r in results], time.perf_counter() - t

    def grid_order(items_, budget, subset=None, extra=0, packed=False):
        pool = list(range(len(items_))) if subset is None else sorted(subset)
        cost = scoring.packed_length if packed else runner.request_cost
        widest = max(cost(items_[i].request) + extra for i in pool)
        rows = max(1, budget // max(1, widest))  # the same budget, rows fixed by the widest prompt
        return [pool[i : i + rows] for i in range(0, len(pool), rows)]

    def full_logits_letter(model_, requests, pad):
        ids, mask, pos = scoring.left_pad([r.prompt_ids for r in requests], pad, model_.device)
        logits = model_(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float()
        picked = logits.gather(1, scoring.label_matrix(requests, logits.device))
        return scoring.letter_results(picked, torch.logsumexp(logits, -1), requests)

    variants = {"full": lambda: score()}
    variants["unfused_norms"] = lambda: _with(unfused(model), score)
    variants["unsorted_batches"] = lambda: _with(patched(runner, "make_batches", grid_order), score)
    variants["head_one_matmul"] = lambda: _with(patched(scoring, "head_logits", _one_matmul_head(scoring.head_logits)), score)
    if packed:  # the options through the prompt's shared KV cache instead of one packed pass
        variants["cached_options"] = lambda: _with(patched(scoring, "packing_works", lambda *a: False), score)
    if method == "letter":
        variants["full_logits"] = lambda: _with(patched(scoring, "letter_causal", torch.inference_mode()(full_logits_letter)), score)
    rows = []
    base_pred, base_s = None, None
    for name, fn in variants.items():
        pred, seconds = fn()
        if name == "full":
            base_pred, base_s = pred, seconds
        rows.append({"variant": name, "seconds": round(seconds, 2), "prompts_per_s": round(len(items) / seconds, 2),
                     "slowdown": round(seconds / base_s, 2), "same_predictions": pred == base_pred})
    if method == "cloze":
        shared_s = min(build()[1], build_s)
        with patched(runner, "option_tokens", _per_prompt_option_tokens(runner)):
            per_prompt_items, per_prompt_s = build()
        same = [it.request.option_ids for it in per_prompt_items] == [it.request.option_ids for it in all_items]
        rows.append({"variant": "per_prompt_tokenization", "seconds": round(per_prompt_s, 2),
                     "prompts_per_s": round(len(all_items) / per_prompt_s, 1),
                     "slowdown": round(per_prompt_s / shared_s, 2), "same_predictions": same,
                     "note": f"building and tokenizing all {len(all_items)} prompts ({shared_s:.2f} s shared)"})
    padding = padding_shares(all_items, cfg.model.batch_tokens or 4096, packed)
    print("prompt positions that are padding, whole grid (" + ", ".join(f"{k}: {v:.1%}" for k, v in padding.items()) + ")")
    print(f"{info['model']} {info['dtype']} on {info['device']}, {method}/{fmt}, {len(items)} prompts, "
          f"batch_tokens={cfg.model.batch_tokens}, {torch.get_num_threads()} threads")
    print(f"{'variant':<26}{'seconds':>9}{'prompts/s':>11}{'x full':>8}  same predictions")
    for r in rows:
        print(f"{r['variant']:<26}{r['seconds']:>9}{r['prompts_per_s']:>11}{r['slowdown']:>8}  {r['same_predictions']}"
              + (f"  ({r['note']})" if "note" in r else ""))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "method": method, "rows": rows, "padding": padding}, indent=2,
                                        default=str))


def padding_shares(items, budget: int, packed: bool = False) -> dict:
    """Share of the forward pass's positions that are padding over the whole grid (packed cloze rows, else
    the prompt pass), for the run's batches (sorted by that length), batches sorted by prompt plus
    option cost, and grid order."""
    from persona_bench.run.batching import make_batches, request_cost
    from persona_bench.scoring.cloze import packed_length

    length = packed_length if packed else (lambda r: len(r.prompt_ids))

    def share(batches):
        real = sum(length(items[i].request) for b in batches for i in b)
        return 1 - real / sum(len(b) * max(length(items[i].request) for i in b) for b in batches)

    def cut(order):
        out, i = [], 0
        while i < len(order):
            rows = max(1, budget // max(1, request_cost(items[order[i]].request)))
            out.append(order[i : i + rows])
            i += rows
        return out

    by_cost = sorted(range(len(items)), key=lambda i: (-request_cost(items[i].request), i))
    return {"run.py's order" + (" (packed rows, longest first)" if packed else " (by prompt length)"):
            share(make_batches(items, budget, packed=packed)),
            "sorted by prompt + option cost": share(cut(by_cost)),
            "grid order": share(cut(list(range(len(items)))))}


def _with(ctx, fn):
    with ctx:
        return fn()


def _one_matmul_head(blocked):
    def head(model, hidden, ids, block=4096):
        return blocked(model, hidden, ids, block=model.get_output_embeddings().weight.shape[0])
    return head


def _per_prompt_option_tokens(runner):
    from persona_bench.scoring.tokens import suffix_ids

    def per_prompt(items, specials, ends, tokenizer, arch):
        for it, special in zip(items, specials):
            it.request.option_ids = [suffix_ids(tokenizer, it.prompt, it.request.prompt_ids, c, special) for c in it.choices]
    return per_prompt


if __name__ == "__main__":
    main()
