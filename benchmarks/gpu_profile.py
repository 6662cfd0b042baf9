"""Where the time of scoring goes on one GPU: torch.profiler over letter and cloze scoring of a
random-weight Llama-2-7B-shaped model (benchmarks/gpu_scale.py's model and paper-length prompts, the
project's own batches and score_batch), operators grouped by device time.

    python3 benchmarks/gpu_profile.py --out $OUT/gpu_profile.txt          # on the device machine, after gpu_check
    python benchmarks/gpu_profile.py --small --out /tmp/gpu_profile.txt   # the same flow on a CPU

Prints, per method, the seconds of one profiled pass, the share of device time in matrix products
(cuBLAS kernels on CUDA; aten::mm/addmm/bmm on a CPU), attention and the rest, and the top operators;
the whole tables go to --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from gpu_common import score_all, sync
from gpu_scale import SHAPES, SMALL_SHAPES, build_random_llama, paper_requests

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "gemm", "gemv", "cutlass", "xmma", "nvjet", "cublas")
ATTENTION = ("attention", "sdpa", "flash", "fmha")


def time_attr(cuda: bool) -> str:
    """The profiler's per-event time: the kernels' on CUDA, the operators' own on a CPU."""
    return "self_device_time_total" if cuda else "self_cpu_time_total"


def shares(events, cuda: bool) -> dict:
    """Seconds of device time in matrix products, attention and everything else: on CUDA the kernels
    themselves (named by cuBLAS/cuDNN/flash), on a CPU the operators' self time."""
    from torch.autograd import DeviceType

    out = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for e in events:
        if cuda and e.device_type != DeviceType.CUDA:
            continue  # operators: their kernels are counted as kernels
        name = e.key.lower()
        t = getattr(e, time_attr(cuda)) / 1e6
        kind = ("attention" if any(a in name for a in ATTENTION)
                else "matmul" if any(m in name for m in MATMUL) else "other")
        out[kind] += t
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a two-layer stand-in and a few prompts (a CPU)")
    ap.add_argument("--prompts", type=int, default=0, help="letter prompts (cloze: half); 0: 512, --small 12")
    ap.add_argument("--budget", type=int, default=16384, help="padded tokens per batch")
    ap.add_argument("--out", default=None, help="text file for the whole tables")
    args = ap.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.type == "cuda"
    shape = (SMALL_SHAPES if args.small else SHAPES)["7b"]
    n = args.prompts or (12 if args.small else 512)
    model = build_random_llama(shape, "bf16", dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    text = []
    for method, k in (("letter", n), ("cloze", max(1, n // 2))):
        reqs = paper_requests(k, method, shape["vocab_size"], 0)
        score_all(model, reqs, method, 0, args.budget)  # warm-up: kernels chosen, memory allocated
        sync(dev)
        t = time.perf_counter()
        with profile(activities=activities) as prof:
            score_all(model, reqs, method, 0, args.budget)
            sync(dev)
        seconds = time.perf_counter() - t
        events = prof.key_averages()
        s = shares(events, cuda)
        total = sum(s.values()) or 1e-9
        line = (f"PROFILE {method} prompts={k} budget={args.budget} wall_s={seconds:.3f} device_s={total:.3f} "
                + " ".join(f"{key}={v / total:.3f}" for key, v in s.items()))
        table = events.table(sort_by=time_attr(cuda), row_limit=25, max_name_column_width=60)
        print(line, flush=True)
        print("\n".join(table.splitlines()[:16]), flush=True)
        text += [line, table, ""]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
