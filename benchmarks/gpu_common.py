"""What benchmarks/gpu_check.py and benchmarks/gpu_scale.py share: device facts, scoring through the
project's batching, comparisons of two scorings, the check outcomes (ok / fail / skip), JSON output.

Not a script: gpu_check.py imports it as its neighbour in benchmarks/ (first on sys.path when a script
of that folder runs; the tests put benchmarks/ on sys.path)."""

from __future__ import annotations

import gc
import math
import platform
import re
from importlib import metadata

import torch

PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "huggingface_hub", "bitsandbytes", "safetensors",
            "omegaconf", "numpy", "pandas")
# Tolerances: the largest allowed |difference| of any label (option) probability, and the least share of
# equal predictions (near-ties flip). Measured with bitsandbytes' CPU backend on 128 letter requests of
# the sharpened tiny model (largest difference, agreement): bf16 vs fp32 0.004, 0.99; 8bit vs bf16 0.012,
# 0.99; 4bit vs bf16 0.13, 0.74. The GPU kernels round differently: the JSON keeps every figure. fp32 in
# other batches: every decisive prediction equal (close), and ties may flip (on an H200, 2 of 128 cloze
# rows whose top two options were within 4e-7 of each other, with every probability within 3.5e-7).
TOL = {"fp32": 1e-4, "bf16": 0.02, "8bit": 0.05, "4bit": 0.3}
MIN_AGREEMENT = {"fp32": 0.95, "bf16": 0.9, "8bit": 0.9, "4bit": 0.6}


class CheckFailed(AssertionError):
    pass


class Skip(Exception):
    pass


def require(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def device_info(dev: torch.device) -> dict:
    info = {"device": str(dev), "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count, cuda=torch.version.cuda)
        try:
            info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        except Exception:  # noqa: BLE001 - the flag's API changes between torch versions
            pass
    return info


def device_slug(info: dict) -> str:
    """The device's name for a results file: 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'; 'cpu' without a GPU."""
    name = re.sub(r"^nvidia\s+", "", (info.get("gpu") or "cpu").strip(), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def make_batches(requests: list, budget: int, extra: int = 0, packed: bool = False) -> list[list[int]]:
    """Indices in batches, longest first, each within `budget` padded tokens: the runner's own batching."""
    from persona_bench.run.batching import make_batches as runner_batches

    return runner_batches(requests, budget, extra=extra, packed=packed)


def score_all(model, requests: list, method: str, pad_id: int, budget: int) -> list:
    """Every request scored batch by batch (run.batching's batches, backends.hf.score_batch), in order."""
    from persona_bench.backends.hf import score_batch

    out = [None] * len(requests)
    packed = method == "cloze"  # causal cloze packs each request's options into its row (scoring.cloze)
    for batch in make_batches(requests, budget, packed=packed):
        for i, r in zip(batch, score_batch(model, [requests[i] for i in batch], "causal", method, pad_id, "mean", budget)):
            out[i] = r
    return out


def compare(ref: list, other: list, tol: float) -> dict:
    """Probability differences and prediction agreement of `other` against `ref`. "Decisive" rows
    have a top-two gap over 2 x tol in `ref`: within tolerance they cannot flip."""
    diffs = [abs(a - b) for r, o in zip(ref, other) for a, b in zip(r.probs, o.probs)]
    agree = [r.pred == o.pred for r, o in zip(ref, other)]
    gaps = [sorted(r.probs)[-1] - sorted(r.probs)[-2] for r in ref]
    decisive = [a for a, g in zip(agree, gaps) if g > 2 * tol]
    finite = all(math.isfinite(x) for o in other for x in o.scores)
    return {
        "n": len(ref),
        "distinct_preds_ref": len({r.pred for r in ref}),
        "max_prob_diff": max(diffs),
        "mean_prob_diff": sum(diffs) / len(diffs),
        "agreement": sum(agree) / len(agree),
        "decisive_n": len(decisive),
        "decisive_agreement": sum(decisive) / len(decisive) if decisive else 1.0,
        "finite": finite,
    }


def close(c: dict, tol: float, min_agreement: float) -> bool:
    """Every probability within `tol`, every decisive prediction equal, and at least `min_agreement` of all."""
    return (c["finite"] and c["max_prob_diff"] <= tol and c["decisive_agreement"] == 1.0
            and c["agreement"] >= min_agreement)


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v) or "-"
    return str(v)
