"""A check of persona-bench on one CUDA GPU in under ten minutes: no downloads, no MMLU data, no weights.

On an H100 or H200 (the device machine: benchmarks/README.md#gpu-check says what to carry), from the
repository root, with the wheels carried in .whl/ (transformers 5.24.0, tokenizers 0.23.3,
bitsandbytes 0.50.2, omegaconf 2.3.1, antlr4-python3-runtime 4.9.3; the machine's own torch,
accelerate, huggingface_hub and pandas are used):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD    # the wheels, and persona_bench from this checkout (not installed there)
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/ --budget-s 540

Elsewhere persona_bench is imported as installed (pip install -r requirements.txt: editable); the
script never adds it to sys.path.

On a CPU: --small runs the whole flow with two-layer stand-ins of the 7B and 13B shapes (bitsandbytes
skipped) in about a minute; --full adds the bitsandbytes checks (its CPU backend):

    python benchmarks/gpu_check.py --small --out /tmp/
    python benchmarks/gpu_check.py --small --checks score_7b,generate_7b,agree_7b --out /tmp/

Checks, in this order, each isolated (a failing one records its exception; the others still run):

  sdpa, bf16_letter, bf16_cloze, batch_invariance, bnb_4bit, bnb_8bit
                    a tiny local Llama loaded by load_model: sdpa attention, bf16 against fp32,
                    batch invariance, bitsandbytes 4-bit and 8-bit (benchmarks/gpu_tiny.py)
  matmul, score_7b, generate_7b, agree_7b, score_13b, generate_13b, agree_13b
                    random-weight Llama-2-7B- and 13B-shaped models on prompts of the paper grid's
                    lengths: scoring MFU, tokens/s, peak memory, generation against the memory
                    bandwidth, bf16 against fp32 (benchmarks/gpu_scale.py)

A time budget (--budget-s) starts a check only when the time left covers its expected length and
prints `CHECK <name> SKIP time budget: ...` otherwise, so the run ends inside the device machine's
ten-minute command limit. Prints one line per check, `CHECK <name> ok|FAIL|SKIP <figures>`, writes
every figure with the package versions and the device name to --out (a file, or a folder that gets
gpu_check_<device>_<date>.json; default benchmarks/results/) after every check, and exits 1 when
any check failed.
"""


from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

# gpu_common.py, gpu_tiny.py and gpu_scale.py are this script's neighbours in benchmarks/ (first on
# sys.path when a script of that folder runs).
import gpu_scale
import gpu_tiny
import torch
from gpu_common import Skip, device_info, device_slug, fmt, free_memory, jsonable, versions
from gpu_tiny import Ctx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # where --out's default folder puts gpu_check_<device>_<date>.json

CHECKS = {
    "sdpa": gpu_tiny.check_sdpa,
    "bf16_letter": lambda ctx: gpu_tiny.check_bf16(ctx, "letter"),
    "bf16_cloze": lambda ctx: gpu_tiny.check_bf16(ctx, "cloze"),
    "batch_invariance": gpu_tiny.check_batch_invariance,
    "bnb_4bit": lambda ctx: gpu_tiny.check_bnb(ctx, "4bit"),
    "bnb_8bit": lambda ctx: gpu_tiny.check_bnb(ctx, "8bit"),
    **gpu_scale.STEPS,
}
# Seconds each check takes on an H100/H200 at most (measured 2026-11-26 for the first six): a check
# starts only when the budget has this much left.
ESTIMATE = {"sdpa": 15, "bf16_letter": 5, "bf16_cloze": 10, "batch_invariance": 20, "bnb_4bit": 10, "bnb_8bit": 10,
            **gpu_scale.ESTIMATE}

HEADLINE = {  # the figures printed on each CHECK line (all figures go to the JSON)
    "sdpa": ["attn_implementation", "sdpa_calls_per_forward", "attention_kernels"],
    "bf16_letter": ["bf16_vs_fp32.max_prob_diff", "bf16_vs_fp32.agreement", "bf16_vs_fp32.distinct_preds_ref",
                    "bf16_vs_fp32.n"],
    "bf16_cloze": ["bf16_vs_fp32.max_prob_diff", "bf16_vs_fp32.agreement", "bf16_vs_fp32.distinct_preds_ref",
                   "bf16_vs_fp32.n"],
    "batch_invariance": ["max_prob_diff_fp32", "max_prob_diff_bf16", "min_agreement"],
    "bnb_4bit": ["module_type", "quantized_linears", "linear_weight_ratio", "footprint_ratio", "max_prob_diff",
                 "label_agreement", "vocab_argmax_agreement"],
    "bnb_8bit": ["module_type", "quantized_linears", "linear_weight_ratio", "footprint_ratio", "max_prob_diff",
                 "label_agreement", "vocab_argmax_agreement"],
    **gpu_scale.HEADLINE,
}


def headline(name: str, fig: dict) -> str:
    parts = []
    for key in HEADLINE.get(name, []):
        v = fig
        for k in key.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            parts.append(f"{key.removeprefix('bf16_vs_fp32.')}={fmt(v)}")
    return " ".join(parts)


def out_path(out: str, report: dict) -> Path:
    """--out as given, or, for a folder (an existing one, or a path ending in '/'), its
    gpu_check_<device>_<date>.json (the device named by device_slug: h100-80gb-hbm3, h200, cpu)."""
    p = Path(out)
    if out.endswith("/") or p.is_dir():
        return p / f"gpu_check_{device_slug(report)}_{datetime.date.today().isoformat()}.json"
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available) | cuda | cuda:N | cpu")
    ap.add_argument("--out", default=f"{RESULTS}/",
                    help="JSON file for every figure, or a folder for gpu_check_<device>_<date>.json")
    ap.add_argument("--small", action="store_true",
                    help="two-layer stand-ins of the 7B and 13B shapes and a few prompts: the whole flow on a CPU")
    ap.add_argument("--budget-s", type=float, default=540,
                    help="seconds for the whole run: a check that would end later is skipped (0: no limit)")
    ap.add_argument("--full", action="store_true", help="run the bitsandbytes checks on the CPU too (its CPU backend)")
    ap.add_argument("--checks", default=",".join(CHECKS), help="comma-separated subset of: " + ", ".join(CHECKS))
    ap.add_argument("--requests", type=int, default=0,
                    help="tiny-model requests per method (0: 128 on CUDA, 16 on the CPU)")
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="scoring token budgets, comma-separated (default: the auto budget and 16384; --small 1024)")
    ap.add_argument("--repeats", type=int, default=0,
                    help="timed passes per scoring budget, the best reported (0: 2 on CUDA, 1 on the CPU)")
    ap.add_argument("--new-tokens", type=int, default=0, help="generated tokens per prompt (0: 32; --small 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the tiny model is built (default: a temporary directory)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # a per-call note on casting bf16 inputs to fp16
    from persona_bench.models.devices import resolve_device

    dev = resolve_device(args.device)
    args.requests = args.requests or (128 if dev.type == "cuda" else 16)
    torch.manual_seed(args.seed)
    names = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        ap.error(f"unknown checks {unknown}; valid: {', '.join(CHECKS)}")
    report = {"argv": sys.argv[1:] if argv is None else list(argv), "versions": versions(), **device_info(dev),
              "small": args.small, "budget_s": args.budget_s, "checks": {}}
    print(f"gpu_check on {report.get('gpu', dev)}: " + " ".join(f"{k}={v}" for k, v in report["versions"].items()),
          flush=True)
    out = out_path(args.out, report)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every check, so a run cut short still leaves its figures
        report["wall_seconds"] = round(time.perf_counter() - t_start, 2)
        report["ok"] = not any(e["status"] == "fail" for e in report["checks"].values())
        out.write_text(json.dumps(jsonable(report), indent=2) + "\n")

    workdir = (tempfile.TemporaryDirectory(prefix="gpu_check_") if args.workdir is None
               else contextlib.nullcontext(args.workdir))
    with workdir as wd:
        ctx = Ctx(args, dev, Path(wd), report.get("gpu"), t_start + args.budget_s if args.budget_s else math.inf)
        for name in names:
            t = time.perf_counter()
            entry: dict = {}
            need = 0 if args.small or not ctx.cuda else ESTIMATE.get(name, 30)
            try:
                if ctx.time_left() < need:
                    raise Skip(f"time budget: {t - t_start:.0f} s of {args.budget_s:.0f} used, this check takes "
                               f"up to {need} s")
                fig = CHECKS[name](ctx)
                entry.update(status="ok", figures=fig)
            except Skip as e:
                entry.update(status="skip", reason=str(e))
            except Exception as e:  # noqa: BLE001 - each check is isolated; its error is the result
                entry.update(status="fail", error=f"{type(e).__name__}: {e}"[:2000],
                             traceback=traceback.format_exc()[-4000:])
            entry["seconds"] = round(time.perf_counter() - t, 2)
            report["checks"][name] = entry
            word = {"ok": "ok", "skip": "SKIP", "fail": "FAIL"}[entry["status"]]
            detail = (headline(name, entry["figures"]) if entry["status"] == "ok"
                      else entry.get("reason") or entry["error"].splitlines()[0][:300])
            print(f"CHECK {name} {word} {detail} ({entry['seconds']:.1f} s)", flush=True)
            report["tiny_build_seconds"] = ctx.shared.get("tiny_build_seconds")
            free_memory()
            write()
        gpu_scale.release(ctx)
        ctx.drop_models()

    write()
    failed = [n for n, e in report["checks"].items() if e["status"] == "fail"]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks ok'} in {report['wall_seconds']:.0f} s; "
          f"figures in {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download (read when transformers is imported)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(main())
