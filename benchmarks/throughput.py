"""Scoring throughput against the hardware's limit, in one process.

    python benchmarks/throughput.py                         # the demo's scoring, about 200 prompts
    python benchmarks/throughput.py --n-prompts 16          # a quick look (a few whole batches)
    python benchmarks/throughput.py --n-prompts 500 scoring=letter
    python benchmarks/throughput.py --compare-lm-eval       # also lm-evaluation-harness on the same prompts
    python benchmarks/throughput.py --profile 30            # also the operators that take the time (torch.profiler)
    python benchmarks/throughput.py model=llama2 device=cuda --n-prompts 5000

It builds the run's real prompts (the config's questions x personas, as `run.py`
would), takes about N of them as whole batches of the run, scores them with the run's scoring
path and reports:

  prompts/s, tokens/s      real tokens only (prompt and option tokens, no padding)
  achieved TFLOP/s         2 x the body's linear parameters per real token, plus
                           attention (4 x heads x head_dim x keys attended, per
                           query token and layer), plus the output layer (2 x
                           vocabulary x hidden) at every position whose full
                           distribution the method needs (letter: the answer
                           position; cloze: the prompt's last position and each
                           option position), options' common beginnings once
                           (models.cost.scoring_flops)
  matmul ceiling           the device's matmul rate in the run's dtype on the
                           model's own layer shapes (every distinct linear layer,
                           and the output layer), at the run's mean tokens per
                           forward pass: FLOP-weighted over the layers; timed
                           before and after the run, each shape's better rate
  4096x4096 rate           the square matmul rate beside it, for reference

and one line `fraction_of_matmul_ceiling=<x>` (achieved over ceiling). The line
`fraction_model_flops_only=<y>` counts only 2 x non-embedding parameters per token plus
attention as achieved work, over the same time, against the body's ceiling: for letter
scoring the two agree (one output row per prompt); for cloze, whose every option position needs
the full 262,144-way distribution of the embedded model, the output layer is real work the
first line counts and the second does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from persona_bench.models.cost import layer_shapes, matmul_tflops, scoring_flops, shape_ceiling

ROOT = Path(__file__).resolve().parents[1]  # the checkout: conf/ holds the configs run.py composes


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from persona_bench.config import register
    from persona_bench.models.hub import register_resolvers

    register()
    register_resolvers()  # ${hf:...}: model=hf
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        dcfg = hydra_compose("config", overrides=["output_dir=/tmp/persona-bench-throughput", "progress=false",
                                                  "tracking=none", *overrides])
    return OmegaConf.to_object(dcfg)


def sample_batches(items: list, budget: int, n: int, packed: bool = False) -> list:
    """About n of the run's prompts, as whole batches of the run (cut as run.py cuts the whole grid),
    spread evenly from its longest batch to its shortest: the same batches, padding and lengths a
    real run has, in proportion."""
    from persona_bench.run.batching import make_batches

    batches = make_batches([it.request for it in items], budget, packed=packed)
    per = max(1, len(items) // max(1, len(batches)))
    k = min(len(batches), max(1, round(n / per)))
    chosen = [batches[round(j * (len(batches) - 1) / max(1, k - 1))] for j in range(k)] if k > 1 else batches[:1]
    return [items[i] for b in chosen for i in b]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=200,
                    help="about this many prompts, as whole batches of the run spread from longest to shortest")
    ap.add_argument("--compare-lm-eval", action="store_true",
                    help="also score the same prompts with lm-evaluation-harness (if installed)")
    ap.add_argument("--lm-eval-batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="after the timed run, score the same prompts again under torch.profiler and print the K "
                         "operators with the most self CPU time (what is not a matmul shows here)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py (model=..., scoring=..., device=...)")
    args = ap.parse_args()

    from persona_bench.backends import load_backend
    from persona_bench.run.batching import make_batches, score_items
    from persona_bench.run.job import Job
    from persona_bench.run.setup import attach
    from persona_bench.scoring.cloze import packed_length

    cfg = compose(args.overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    job = Job.prepare(cfg)
    method, fmt = job.method, job.fmt
    backend = load_backend(cfg, method)
    t = time.perf_counter()
    _, all_items = attach(job, backend)  # the backend given: binds the placement and builds every item
    build_s = time.perf_counter() - t
    model, info = backend.model, backend.info
    budget = backend.batch_budget(method)
    packed = backend.packed_rows(method)
    items = sample_batches(all_items, budget, args.n_prompts, packed)
    dev = torch.device(info["device"])

    reqs = [it.request for it in items]
    shapes = layer_shapes(model, cfg.model.arch)
    work = scoring_flops(shapes, reqs)  # the head counts where the method needs a full distribution
    body_tokens, head_rows = work["tokens"], work["head_rows"]
    lin_flops, att_flops, head_flops = work["linear"], work["attention"], work["head"]
    # Padding: of the packed rows' positions (causal cloze), else of the prompt pass's.
    length = packed_length if packed else (lambda r: len(r.prompt_ids))
    cut = make_batches(reqs, budget, packed=packed)
    widths = [(len(b), max(length(reqs[i]) for i in b)) for b in cut]
    prompt_padding = 1 - sum(length(r) for r in reqs) / sum(n * w for n, w in widths)
    mean_tokens = max(1, body_tokens // len(cut))
    mean_head_rows = max(1, head_rows // len(cut))

    def ceiling() -> dict:
        return shape_ceiling(shapes, info["dtype"], str(dev), mean_tokens, mean_head_rows)

    # The ceiling is timed before and after the run, and each shape keeps its better rate: on a shared or
    # throttled machine one quiet moment is enough for the ceiling, while the run pays for every busy one.
    # Warm-up on a few prompts (first-call allocations, kernel selection), then the timed run.
    first = ceiling()
    score_items(backend, items[:4], job, {}, lambda b, r: None)
    t = time.perf_counter()
    results, timing = score_items(backend, items, job, {}, lambda b, r: None)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    rates = {k: max(v, first[k]) for k, v in ceiling().items()}
    # The ceiling for this run's mix of work: each part's FLOPs at its shapes' best rate.
    ceil = dict(rates, all=(lin_flops + att_flops + head_flops) / ((lin_flops + att_flops) / rates["body"]
                                                                   + head_flops / max(rates["head"], 1e-9)))
    square = matmul_tflops(info["dtype"], str(dev), n=4096, seconds=1.0)
    achieved = (lin_flops + att_flops + head_flops) / seconds / 1e12
    body_achieved = (lin_flops + att_flops) / seconds / 1e12
    out = {
        "model": cfg.model.name, "device": str(dev), "dtype": info["dtype"], "scoring": method, "format": fmt,
        "threads": torch.get_num_threads(), "n_prompts": len(items), "batch_tokens": cfg.model.batch_tokens,
        "forward_batches": timing["batches"], "seconds": round(seconds, 3),
        "prompts_per_s": round(len(items) / seconds, 2), "tokens_per_s": round(body_tokens / seconds, 1),
        "real_tokens": body_tokens, "head_rows": head_rows, "mean_tokens_per_batch": mean_tokens,
        "prompt_padding_share": round(prompt_padding, 4),
        "tflop": {"linear": lin_flops / 1e12, "attention": att_flops / 1e12, "head": head_flops / 1e12},
        "achieved_tflops": round(achieved, 4),
        "ceiling_tflops": round(ceil["all"], 4), "ceiling_body_tflops": round(ceil["body"], 4),
        "ceiling_head_tflops": round(ceil["head"], 4), "square_4096_tflops": round(square, 4),
        "fraction_of_matmul_ceiling": round(achieved / ceil["all"], 3),
        "fraction_model_flops_only": round(body_achieved / ceil["body"], 3),
        "build_and_tokenize_s_all": round(build_s, 2), "n_prompts_all": len(all_items),
    }
    print(f"{out['model']} on {out['device']} ({out['dtype']}, {out['threads']} threads), {method}/{fmt}: "
          f"{len(items)} prompts in {seconds:.1f} s = {out['prompts_per_s']} prompts/s, {out['tokens_per_s']:,} "
          f"real tokens/s ({timing['batches']} batches, ~{mean_tokens} real tokens each, "
          f"{prompt_padding:.1%} of prompt positions padding)")
    print(f"achieved {achieved:.4f} TFLOP/s (linear {lin_flops / 1e12:.2f}, attention {att_flops / 1e12:.2f}, "
          f"output layer {head_flops / 1e12:.2f} TFLOP); matmul ceiling on the model's shapes {ceil['all']:.4f} "
          f"TFLOP/s (body {ceil['body']:.4f}, output layer {ceil['head']:.4f}); 4096x4096: {square:.4f} TFLOP/s")
    print(f"fraction_model_flops_only={out['fraction_model_flops_only']}  (2 x non-embedding params per token plus "
          "attention over the time of everything, output layer included)")
    print(f"fraction_of_matmul_ceiling={out['fraction_of_matmul_ceiling']}")
    if args.profile:
        out["profile"] = profile_ops(backend, items, job, args.profile)
    if args.compare_lm_eval:
        out["lm_eval"] = compare_lm_eval(items, results, info, cfg, method, seconds, args.lm_eval_batch_size)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def profile_ops(backend, items, job, k: int) -> list[dict]:
    """Score the items once more under torch.profiler; print and return the k operators with the most
    self CPU time, with their share of the whole."""
    from torch.profiler import ProfilerActivity, profile

    from persona_bench.run.batching import score_items

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        score_items(backend, items, job, {}, lambda b, r: None)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    rows = [{"op": e.key, "calls": e.count, "self_s": round(e.self_cpu_time_total / 1e6, 3),
             "share": round(e.self_cpu_time_total / total, 4)} for e in ops[:k]]
    print(f"{'operator':<44} {'calls':>7} {'self s':>8} {'share':>7}")
    for r in rows:
        print(f"{r['op'][:44]:<44} {r['calls']:>7} {r['self_s']:>8.2f} {r['share']:>7.1%}")
    return rows


def compare_lm_eval(items, results, info, cfg, method: str, seconds: float, batch_size: int) -> dict:
    from lm_eval_compare import lm_eval_available, run_lm_eval

    ok, why = lm_eval_available()
    if not ok:
        print(f"--compare-lm-eval: {why}")
        return {"available": False, "reason": why}
    from persona_bench.config.schema import default_cache_dir
    from persona_bench.models.loading import model_dir

    where, _, _ = model_dir(cfg.model, default_cache_dir(cfg.cache_dir))
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[info["dtype"]]
    by = cfg.scoring.cloze_score if method == "cloze" else "sum"
    lm = run_lm_eval(str(where), [it.prompt for it in items], [it.choices for it in items], dtype=dtype,
                     batch_size=batch_size, device=info["device"], by=by)
    ours = [r.pred for r in results]
    agree = statistics.fmean(a == b for a, b in zip(ours, lm["pred"]))
    ratio = lm["seconds"] / seconds
    print(f"lm-evaluation-harness {lm['version']} (batch {batch_size}, {dtype}): {len(items)} prompts in "
          f"{lm['seconds']:.1f} s = {len(items) / lm['seconds']:.2f} prompts/s; persona-bench is {ratio:.2f}x faster; "
          f"identical predictions {agree:.2%}")
    print(f"speedup_vs_lm_eval={ratio:.2f}")
    print(f"prediction_agreement={agree:.4f}")
    return {"available": True, "version": lm["version"], "seconds": round(lm["seconds"], 3), "speedup": round(ratio, 3),
            "agreement": round(agree, 4), "batch_size": batch_size, "n_requests": lm["n_requests"]}


if __name__ == "__main__":
    main()
