"""Generation speed, before and after, with the same parsed answers: scoring=generate and the self-pick.

    python benchmarks/generation.py                              # scoring=generate dataset.per_subject=1, ~100 prompts
    python benchmarks/generation.py --n-prompts 442 --json /tmp/gen.json   # all 442 prompts
    python benchmarks/generation.py --ablations                  # also each of the loop's savings undone
    python benchmarks/generation.py --self-pick                  # the model's own persona pick (26 prompts)
    python benchmarks/generation.py model.dtype=fp32             # Hydra overrides as for run.py

It builds the run's real prompts (`scoring=generate dataset.per_subject=1` unless overridden), takes
about N of them as whole generation batches of the run (cut as `run.py` cuts them, spread from the
longest batch to the shortest), and generates them, in one process, with

  before   transformers' own loop, `model.generate` with max_new_tokens (scoring.generate.generate_batch_hf:
           the path of every run before scoring.generate.decode)
  after    scoring.generate.generate_batch as HFBackend.generate calls it (scoring.generate.decode: last-position
           head, chunked prompt pass, stop strings, settled answers, rows leave)
  no_<x>   (--ablations) `after` with one of scoring.generate.Speedups off

and prints per variant (the fastest of --repeat runs) prompts/s, generated tokens/s (the tokens each
answer keeps, end-of-sequence included), the seconds in prompt passes and in decoding steps, the peak
resident memory so far (`after` runs first, so its figure is its own plus the loaded model), and against `before`: how many parsed answers are identical (option and rule,
scoring.parse) and how many rows' label logits are bit-identical.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

# throughput.py is this script's neighbour in benchmarks/, first on sys.path when a script of that folder runs.
from throughput import compose

DEFAULTS = ["scoring=generate", "dataset.per_subject=1"]


def pick_batches(batches: list[list[int]], n: int) -> list[list[int]]:
    """About n prompts as whole batches, spread evenly from the first (longest) to the last."""
    per = max(1, sum(map(len, batches)) // max(1, len(batches)))
    k = min(len(batches), max(1, round(n / per)))
    return [batches[round(j * (len(batches) - 1) / max(1, k - 1))] for j in range(k)] if k > 1 else batches[:1]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class PassTimer:
    """Seconds the model spends in prompt passes (more than one new position) and in decoding steps (one)."""

    def __init__(self, model):
        self.seconds = {"prompt_pass": 0.0, "decode_steps": 0.0}
        model.register_forward_pre_hook(self.start, with_kwargs=True)
        model.register_forward_hook(self.stop, with_kwargs=True)

    def start(self, module, args, kwargs):
        ids = kwargs.get("input_ids", kwargs.get("decoder_input_ids"))
        self.kind = "prompt_pass" if ids is None or ids.shape[-1] > 1 else "decode_steps"
        self.t = time.perf_counter()

    def stop(self, module, args, kwargs, out):
        self.seconds[self.kind] += time.perf_counter() - self.t

    def take(self) -> dict:
        out, self.seconds = self.seconds, {"prompt_pass": 0.0, "decode_steps": 0.0}
        return {k: round(v, 2) for k, v in out.items()}


def run_variant(fn, batches, requests) -> tuple[float, list]:
    out = [None] * len(requests)
    t = time.perf_counter()
    for b in batches:
        for i, res in zip(b, fn([requests[i] for i in b])):
            out[i] = res
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=100, help="about this many prompts, as whole batches of the run")
    ap.add_argument("--ablations", action="store_true", help="also each of scoring.generate.Speedups switched off")
    ap.add_argument("--self-pick", action="store_true", help="the self-pick's prompts (run.self_pick) instead")
    ap.add_argument("--no-before", action="store_true", help="skip transformers' loop (the after path only)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the variants this many times in turn and keep each one's fastest (shared machines)")
    ap.add_argument("--show", type=int, default=0, help="print this many of the after path's answers")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = ap.parse_args()

    from persona_bench.backends import load_backend
    from persona_bench.config.schema import GenerateConfig
    from persona_bench.run.batching import make_batches
    from persona_bench.run.job import Job
    from persona_bench.run.self_pick import MAX_NEW_TOKENS, pick_requests
    from persona_bench.run.setup import attach
    from persona_bench.scoring.generate import BATCH_FACTOR, FAST, Speedups, generate_batch, generate_batch_hf
    from persona_bench.scoring.parse import parse_answer

    cfg = compose(DEFAULTS + args.overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    job = Job.prepare(cfg)
    backend = load_backend(cfg, job.method)
    _, items = attach(job, backend)
    if args.self_pick:
        _, requests, labels, names = pick_requests(job, backend)
        readers = [(labels, tuple(names))] * len(requests)
        settings = GenerateConfig(max_new_tokens=MAX_NEW_TOKENS)
    else:
        requests = [it.request for it in items]
        readers = [(it.labels, it.options) for it in items]
        settings = cfg.scoring.generate
    budget = backend.batch_budget("generate")
    batches = pick_batches(make_batches(requests, budget, extra=settings.max_new_tokens), args.n_prompts)
    chosen = [i for b in batches for i in b]
    model, tok, arch, pad = backend.model, backend.tokenizer, backend.arch, backend.pad_id

    chunk = budget // BATCH_FACTOR  # the prompt pass's row groups: HFBackend.generate's
    variants = {"after": lambda rs: generate_batch(model, tok, rs, arch, pad, settings, FAST, chunk)}
    if args.ablations:
        for name in ("last_position_head", "chunked_prompt_pass", "settled_answers", "stop_strings", "rows_leave"):
            off = Speedups(**{name: False})
            variants[f"no_{name}"] = lambda rs, off=off: generate_batch(model, tok, rs, arch, pad, settings, off, chunk)
    if not args.no_before:
        variants["before"] = lambda rs: generate_batch_hf(model, tok, rs, arch, pad, settings)

    generate_batch(model, tok, [requests[i] for i in batches[-1][:4]], arch, pad, settings, FAST, chunk)  # warm-up
    timer = PassTimer(model)
    figures, outputs, best = {}, {}, {}
    for name, fn in [kv for _ in range(args.repeat) for kv in variants.items()]:
        timer.take()
        seconds, res = run_variant(fn, batches, requests)
        passes = timer.take()
        outputs[name] = res
        if seconds >= best.get(name, float("inf")):
            continue
        best[name] = seconds
        new = sum(res[i].n_new_tokens or 0 for i in chosen)
        figures[name] = {"seconds": round(seconds, 2), "prompts_per_s": round(len(chosen) / seconds, 3),
                         "generated_tokens": new, "generated_tokens_per_s": round(new / seconds, 1),
                         "peak_rss_gb": round(peak_rss_gb(), 2), **passes}
        print(f"{name:>22}: {len(chosen)} prompts in {seconds:7.1f} s = {figures[name]['prompts_per_s']:.3f} prompts/s, "
              f"{new} generated tokens = {figures[name]['generated_tokens_per_s']:.1f} tokens/s (prompt passes "
              f"{passes['prompt_pass']:.1f} s, decoding steps {passes['decode_steps']:.1f} s); "
              f"peak RSS so far {figures[name]['peak_rss_gb']:.2f} GB", flush=True)
    for i in chosen[:args.show]:
        print(f"answer {i} ({outputs['after'][i].n_new_tokens} tokens): {outputs['after'][i].generation!r}")
    ref = "before" if "before" in outputs else "after"
    parsed = {name: [parse_answer(res[i].generation or "", *readers[i]) for i in chosen] for name, res in outputs.items()}
    for name in outputs:
        same_parse = sum(a == b for a, b in zip(parsed[name], parsed[ref]))
        same_scores = sum(outputs[name][i].scores == outputs[ref][i].scores for i in chosen)
        figures[name].update(identical_parsed=same_parse, identical_label_logits=same_scores,
                             speedup=round(figures[ref]["seconds"] / figures[name]["seconds"], 2))
        print(f"{name:>22}: {figures[name]['speedup']:.2f}x {ref}'s prompts/s; parsed answers identical to {ref}'s "
              f"{same_parse}/{len(chosen)}; label logits bit-identical {same_scores}/{len(chosen)}")
    info = {"model": cfg.model.name, "dtype": backend.info.get("dtype"), "threads": torch.get_num_threads(),
            "what": "self_pick" if args.self_pick else f"scoring=generate ({settings.decoding})",
            "n_prompts": len(chosen), "n_prompts_all": len(requests), "batches": [len(b) for b in batches],
            "max_new_tokens": settings.max_new_tokens, "variants": figures}
    print(json.dumps({k: v for k, v in info.items() if k != "variants"}))
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
