"""The output layer's log-normaliser, alone: the fused-log-softmax blocks of scoring.logits.head_logits
against the running max and sum over (block x rows) blocks it replaced, and the matmuls alone.

    python benchmarks/head_lse.py                       # bf16, 660 / 200 / 40 rows, the embedded model's head shape
    python benchmarks/head_lse.py --dtype fp32 --rows 100

Random weights of Gemma 3 270M's head (262,144 x 640); best of --repeat interleaved runs, so a busy
moment slows every variant alike. Prints each variant's time over the matmuls' and its largest
difference from the old path's log-normaliser.
"""

from __future__ import annotations

import argparse
import time
import types

import torch

from persona_bench.models.cost import vocab_block
from persona_bench.scoring.logits import head_logits


def running_lse(weight: torch.Tensor, hidden: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """The old path: (block x rows) products, then cast, max, subtract, exp and sum over each block."""
    n = hidden.shape[0]
    hidden_t = hidden.T.contiguous()
    run_max = torch.full((n,), float("-inf"))
    run_sum = torch.zeros(n)
    for start in range(0, weight.shape[0], block):
        blk = (weight[start : start + block] @ hidden_t).float()
        new_max = torch.maximum(run_max, blk.amax(0))
        run_sum = run_sum * torch.exp(run_max - new_max) + blk.sub_(new_max).exp_().sum(0)
        run_max = new_max
    return run_max + torch.log(run_sum)


def matmuls_only(weight: torch.Tensor, hidden: torch.Tensor) -> None:
    block = vocab_block(hidden.shape[0])
    for start in range(0, weight.shape[0], block):
        hidden @ weight[start : start + block].T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[660, 200, 40])
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--vocab", type=int, default=262_144)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    head.weight.data = (torch.randn(args.vocab, args.hidden, generator=g) * 0.05).to(dtype)
    model = types.SimpleNamespace(get_output_embeddings=lambda: head, config=types.SimpleNamespace())
    print(f"head {args.vocab} x {args.hidden}, {args.dtype}, {torch.get_num_threads()} threads")
    for rows in args.rows:
        hidden = torch.randn(rows, args.hidden, generator=g).to(dtype)
        ids = torch.zeros((rows, 1), dtype=torch.long)
        variants = {"matmuls only": lambda: matmuls_only(head.weight, hidden),
                    "running max and sum (before)": lambda: running_lse(head.weight, hidden),
                    "fused log-softmax (head_logits)": lambda: head_logits(model, hidden, ids)[1]}
        best = dict.fromkeys(variants, float("inf"))
        out = {}
        with torch.inference_mode():
            for _ in range(args.repeat):
                for name, fn in variants.items():
                    t = time.perf_counter()
                    out[name] = fn()
                    best[name] = min(best[name], time.perf_counter() - t)
        ref = out["running max and sum (before)"]
        for name in variants:
            diff = "" if out[name] is None else f"  max |lse - before| {float((out[name] - ref).abs().max()):.2g}"
            print(f"{rows:5d} rows  {name:32s} {best[name] * 1e3:8.1f} ms  {best[name] / best['matmuls only']:.2f}x "
                  f"the matmuls{diff}")


if __name__ == "__main__":
    main()
