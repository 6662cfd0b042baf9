"""A short, self-contained check of persona-bench on a CUDA GPU: no downloads, no MMLU data, no GGUF.

On the GPU machine, from the repository root, with the wheels carried in .whl/
(transformers 5.24.0, tokenizers 0.23.3, bitsandbytes 0.50.2, omegaconf 2.3.1,
antlr4-python3-runtime 4.9.3; the machine's own torch, accelerate, huggingface_hub
and pandas are used):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD    # the wheels, and persona_bench from this checkout (not installed there)
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json

Elsewhere persona_bench is imported as installed (pip install -r requirements.txt: editable); the
script never adds it to sys.path. tests/tiny_models.py is loaded by its file path.

On a CPU (what the test suite runs: bitsandbytes skipped, a 4-layer stand-in for the 7B shape):

    python benchmarks/gpu_check.py --device cpu --out /tmp/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --full    # the bitsandbytes checks too (its CPU backend)

Checks, each isolated (a failing one records its exception; the others still run):

  sdpa              the model loaded by load_model uses attn_implementation "sdpa", and a scoring pass
                    really calls F.scaled_dot_product_attention (on CUDA: the attention kernels it ran)
  bf16_letter       score_batch(letter) in bf16 against fp32 on the same device, tiny local Llama
                    loaded by persona_bench.models.loading.load_model (source=local)
  bf16_cloze        the same for cloze (prompt KV cache shared by the options)
  batch_invariance  the same requests under token budgets 1 (each prompt alone, no padding), 512 and
                    16384: predictions equal, probabilities close (fp32 and bf16, letter and cloze)
  bnb_4bit          load_model(quantization=4bit): Linear4bit modules, uint8 weights, a smaller
                    footprint, label probabilities and vocabulary argmax close to bf16
  bnb_8bit          the same for 8bit (Linear8bitLt, int8 weights)
  matmul            the bf16 dense matmul rate: 8192^3 (persona_bench.models.cost.matmul_tflops) and the 7B layer's shapes
  throughput        a random-weight Llama-2-7B-shaped model (built from its config on the GPU) scoring
                    512 prompts of ~160 tokens, letter method, at token budgets 16384 and 65536:
                    prompts/s, tokens/s, TFLOP/s and MFU against the matmul rate

Prints one line per check, `CHECK <name> ok|FAIL|SKIP <figures>`, writes every figure with the
package versions and the device name to --out (JSON), and exits 1 when any check failed.
The tiny model is tests/tiny_models.py's Llama with its weight matrices scaled (SHARPEN below),
so that its predictions depend on the prompt. Figures: prob = softmax over the answer labels
(letter) or over the options' mean log-likelihoods (cloze); a comparison passes when no
probability moves more than its tolerance and enough predictions agree (TOL, MIN_AGREEMENT);
"decisive" rows (reference top-two gap over twice the tolerance) are reported, as rows that
cannot flip within tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import random
import sys
import tempfile
import time
import traceback
import warnings
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ROOT / "tests" / "tiny_models.py"  # the test suite's tiny models, loaded by file path (tiny_models())

LETTERS = ("A", "B", "C", "D")
SEVEN_B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000)  # Llama-2-7B
SMALL = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=8, vocab_size=32000)  # the CPU stand-in: the same vocabulary, 1/8 the width
PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "huggingface_hub", "bitsandbytes", "safetensors",
            "omegaconf", "numpy", "pandas")

# The test suite's tiny Llama (2 layers, width 32, weights ~N(0, 0.02)) gives every prompt nearly the
# same label probabilities and the same prediction, so agreement would prove nothing. The checks use
# it with every weight matrix scaled by SHARPEN: predictions then depend on the prompt (CPU, 64
# prompts: three of the four labels predicted, median top-two gap 0.11).
SHARPEN = 5.0
# Tolerances: the largest allowed |difference| of any label (option) probability, and the least
# share of equal predictions (near-ties flip). Measured with bitsandbytes' CPU backend on 128
# letter requests (largest difference, agreement): bf16 vs fp32 0.004, 0.99; 8bit vs bf16 0.012,
# 0.99; 4bit vs bf16 0.13, 0.74 (nf4 on a 32-wide random model is coarse; garbage would agree far
# less, and the label distribution is not uniform). The GPU kernels round differently: the JSON
# keeps every figure for recalibration.
TOL = {"fp32": 1e-4, "bf16": 0.02, "8bit": 0.05, "4bit": 0.3}
MIN_AGREEMENT = {"fp32": 1.0, "bf16": 0.9, "8bit": 0.9, "4bit": 0.6}


# --------------------------------------------------------------------------- helpers
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


def prompts(n: int, seed: int) -> list[tuple[str, list[str]]]:
    """n MMLU-like prompts (persona, question, four lettered options, "Answer:") and their options,
    of 10 to ~250 tokens for the tiny tokenizer."""
    rng = random.Random(seed)
    personas = ["You are a doctor.", "You are a lawyer.", "You are a helpful assistant.", "You are a historian.", ""]
    words = ("the capital of water oxygen function cause effect value result structure source energy force cell "
             "market price court contract river city number equation system protein gene virus planet star "
             "Paris London Berlin heart liver brain inflation demand supply gravity friction momentum").split()
    out = []
    for _ in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(2, 90)))
        opts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in LETTERS]
        head = rng.choice(personas)
        body = f"Question: {q}?\n" + "\n".join(f"{lab}. {o}" for lab, o in zip(LETTERS, opts)) + "\nAnswer:"
        out.append(((head + "\n" if head else "") + body, opts))
    return out


def tiny_models():
    """tests/tiny_models.py as a module: it is no package, and tests/ is not on sys.path when this runs as
    a script (persona_bench itself is imported as installed)."""
    import importlib.util

    if "tiny_models" in sys.modules:  # already imported (pytest puts tests/ on sys.path)
        return sys.modules["tiny_models"]
    spec = importlib.util.spec_from_file_location("tiny_models", TINY_MODELS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_models"] = module
    spec.loader.exec_module(module)
    return module


def make_batches(requests: list, budget: int) -> list[list[int]]:
    """Indices in batches, longest first, each within `budget` padded tokens: the runner's own batching."""
    from persona_bench.run.batching import make_batches as runner_batches

    return runner_batches(requests, budget)


def score_all(model, requests: list, method: str, pad_id: int, budget: int) -> list:
    from persona_bench.backends.hf import score_batch

    out = [None] * len(requests)
    for batch in make_batches(requests, budget):
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
    return c["finite"] and c["max_prob_diff"] <= tol and c["agreement"] >= min_agreement


class CheckFailed(AssertionError):
    pass


def require(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


class Skip(Exception):
    pass


# --------------------------------------------------------------------------- context
class Ctx:
    """What the checks share: the device, the tiny model directory, loaded tiny models, requests."""

    def __init__(self, args, dev: torch.device, workdir: Path):
        self.args, self.dev, self.workdir = args, dev, workdir
        self.cuda = dev.type == "cuda"
        self._tiny_dir = None
        self._models: dict = {}
        self._requests: dict = {}
        self.shared: dict = {}

    def tiny_dir(self) -> Path:
        """tests/tiny_models.py's Llama (tokenizer trained here), weight matrices scaled by SHARPEN."""
        if self._tiny_dir is None:
            import shutil

            from transformers import AutoModelForCausalLM

            t = time.perf_counter()
            src = tiny_models().build_tiny_model("llama", self.workdir / "tiny-llama")
            dst = self.workdir / "tiny-llama-sharp"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
            model = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32)
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() == 2:
                        p.mul_(SHARPEN)
            model.save_pretrained(dst)
            self._tiny_dir = dst
            self.shared["tiny_build_seconds"] = round(time.perf_counter() - t, 2)
        return self._tiny_dir

    def tiny(self, dtype: str, quantization: str = "none", keep: bool = True):
        """(model, tokenizer, info) of the tiny Llama through persona_bench.models.loading.load_model."""
        key = (dtype, quantization)
        if key in self._models:
            return self._models[key]
        from persona_bench.config.schema import ModelConfig
        from persona_bench.models.loading import load_model

        cfg = ModelConfig(name=f"tiny-llama-{dtype}-{quantization}", path=str(self.tiny_dir()), source="local",
                          dtype=dtype, quantization=quantization, arch="causal")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = load_model(cfg, device=str(self.dev))
        if keep:
            self._models[key] = loaded
        return loaded

    def requests(self, method: str) -> list:
        if method not in self._requests:
            from persona_bench.inputs.prompts import continuation
            from persona_bench.scoring.requests import Request
            from persona_bench.scoring.tokens import LabelResolver, suffix_ids

            _, tok, _ = self.tiny("fp32")
            resolve = LabelResolver(tok, "causal")
            out = []
            for text, opts in prompts(self.args.requests, self.args.seed):
                ids = tok(text)["input_ids"]
                if method == "letter":
                    out.append(Request(ids, label_ids=resolve(text, ids, LETTERS, True)))
                else:
                    options = [suffix_ids(tok, text, ids, continuation(text, o), True) for o in opts]
                    out.append(Request(ids, option_ids=options))
            self._requests[method] = out
        return self._requests[method]

    def drop_models(self) -> None:
        self._models.clear()
        free_memory()


# --------------------------------------------------------------------------- checks
def check_sdpa(ctx: Ctx) -> dict:
    import torch.nn.functional as F

    model, tok, info = ctx.tiny("bf16" if ctx.cuda else "fp32")
    impl = model.config._attn_implementation
    reqs = ctx.requests("letter")[:16]
    real = F.scaled_dot_product_attention
    calls = []

    def spy(*a, **k):
        calls.append(tuple(a[0].shape))
        return real(*a, **k)

    F.scaled_dot_product_attention = spy
    try:
        score_all(model, reqs, "letter", tok.pad_token_id, 1 << 20)
    finally:
        F.scaled_dot_product_attention = real
    n_layers = model.config.num_hidden_layers
    fig = {"attn_implementation": impl, "sdpa_calls_per_forward": len(calls), "layers": n_layers,
           "dtype": info["dtype"], "model_device": str(model.device)}
    if ctx.cuda:  # which attention kernels the scoring pass ran (padding masks rule out flash attention)
        try:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                score_all(model, reqs, "letter", tok.pad_token_id, 1 << 20)
                sync(ctx.dev)
            names = {e.key for e in prof.key_averages()}
            fig["attention_kernels"] = sorted(n[:80] for n in names if any(
                s in n.lower() for s in ("fmha", "flash", "attention", "attn", "efficient")))[:6]
        except Exception as e:  # noqa: BLE001 - the kernel list is a figure, not the check
            fig["attention_kernels_error"] = f"{type(e).__name__}: {e}"[:300]
    require(impl == "sdpa", f"attn_implementation is {impl!r}, not 'sdpa'")
    require(len(calls) == n_layers, f"{len(calls)} scaled_dot_product_attention calls for {n_layers} layers")
    require(str(model.device).startswith(ctx.dev.type), f"model on {model.device}, not {ctx.dev}")
    return fig


def check_bf16(ctx: Ctx, method: str) -> dict:
    ref_model, tok, _ = ctx.tiny("fp32")
    model, _, _ = ctx.tiny("bf16")
    reqs = ctx.requests(method)
    ref = score_all(ref_model, reqs, method, tok.pad_token_id, 4096)
    got = score_all(model, reqs, method, tok.pad_token_id, 4096)
    c = compare(ref, got, TOL["bf16"])
    fig = {"bf16_vs_fp32": c, "tolerance": TOL["bf16"], "min_agreement": MIN_AGREEMENT["bf16"],
           "dtype_loaded": str(model.dtype)}
    if method == "letter":
        fig["mean_label_mass_bf16"] = sum(r.label_mass for r in got) / len(got)
        fig["mean_label_mass_fp32"] = sum(r.label_mass for r in ref) / len(ref)
    require(model.dtype == torch.bfloat16, f"model dtype {model.dtype}")
    require(c["distinct_preds_ref"] > 1, "the fp32 reference predicts one label for every prompt: agreement proves nothing")
    require(close(c, TOL["bf16"], MIN_AGREEMENT["bf16"]), f"bf16 {method} differs from fp32: {c}")
    return fig


def check_batch_invariance(ctx: Ctx) -> dict:
    budgets = (1, 512, 16384)  # 1: each prompt alone (no padding), the reference
    fig: dict = {"budgets": list(budgets)}
    failures = []
    for dtype in ("fp32", "bf16"):
        model, tok, _ = ctx.tiny(dtype)
        for method in ("letter", "cloze"):
            reqs = ctx.requests(method)
            ref = score_all(model, reqs, method, tok.pad_token_id, budgets[0])
            for b in budgets[1:]:
                c = compare(ref, score_all(model, reqs, method, tok.pad_token_id, b), TOL[dtype])
                c["batches"] = len(make_batches(reqs, b))
                fig[f"{dtype}_{method}_{b}"] = c
                if not close(c, TOL[dtype], MIN_AGREEMENT[dtype]):  # fp32: every prediction equal
                    failures.append(f"{dtype} {method} budget {b}: {c}")
    fig["max_prob_diff_fp32"] = max(v["max_prob_diff"] for k, v in fig.items() if k.startswith("fp32_"))
    fig["max_prob_diff_bf16"] = max(v["max_prob_diff"] for k, v in fig.items() if k.startswith("bf16_"))
    fig["min_agreement"] = min(v["agreement"] for k, v in fig.items() if isinstance(v, dict))
    require(not failures, "; ".join(failures))
    return fig


def linear_bytes(module) -> int:
    """Storage of a linear layer's weight, with bitsandbytes' quantisation constants."""
    w = module.weight
    n = w.numel() * w.element_size()
    qs = getattr(w, "quant_state", None)
    if qs is not None:
        for t in (getattr(qs, "absmax", None), getattr(getattr(qs, "state2", None), "absmax", None),
                  getattr(qs, "code", None)):
            if isinstance(t, torch.Tensor):
                n += t.numel() * t.element_size()
    scb = getattr(w, "SCB", None)  # int8: one scale per output row
    if scb is None and hasattr(module, "state"):
        scb = getattr(module.state, "SCB", None)
    if isinstance(scb, torch.Tensor):
        n += scb.numel() * scb.element_size()
    return n


@torch.inference_mode()
def last_logits(model, requests: list, pad_id: int) -> torch.Tensor:
    from persona_bench.scoring.logits import left_pad

    ids, mask, pos = left_pad([r.prompt_ids for r in requests], pad_id, model.device)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float().cpu()


def check_bnb(ctx: Ctx, quant: str) -> dict:
    if not ctx.cuda and not ctx.args.full:
        raise Skip("no CUDA (bitsandbytes quantisation is checked on the GPU; --full runs it on the CPU)")
    import bitsandbytes as bnb

    base, tok, _ = ctx.tiny("bf16")
    mem0 = torch.cuda.memory_allocated(ctx.dev) if ctx.cuda else 0
    model, _, info = ctx.tiny("bf16", quant, keep=False)
    mem_delta = (torch.cuda.memory_allocated(ctx.dev) - mem0) if ctx.cuda else None
    try:
        cls = bnb.nn.Linear4bit if quant == "4bit" else bnb.nn.Linear8bitLt
        want_dtype = torch.uint8 if quant == "4bit" else torch.int8
        layers = model.model.layers
        linears = [m for layer in layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        quantized = [m for m in linears if isinstance(m, cls)]
        base_linears = [m for layer in base.model.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        qbytes, bbytes = sum(linear_bytes(m) for m in quantized), sum(linear_bytes(m) for m in base_linears)
        foot_q, foot_b = model.get_memory_footprint(), base.get_memory_footprint()
        reqs = ctx.requests("letter")
        ref = score_all(base, reqs, "letter", tok.pad_token_id, 4096)
        got = score_all(model, reqs, "letter", tok.pad_token_id, 4096)
        c = compare(ref, got, TOL[quant])
        lb, lq = last_logits(base, reqs[:64], tok.pad_token_id), last_logits(model, reqs[:64], tok.pad_token_id)
        fig = {
            "quantized_linears": len(quantized),
            "decoder_linears": len(linears),
            "module_type": cls.__name__,
            "weight_dtypes": sorted({str(m.weight.dtype) for m in quantized}),
            "weight_class": type(quantized[0].weight).__name__ if quantized else None,
            "lm_head": type(model.get_output_embeddings()).__name__,
            "footprint_bytes": foot_q,
            "footprint_bytes_bf16": foot_b,
            "footprint_ratio": foot_q / foot_b,
            "linear_weight_bytes": qbytes,
            "linear_weight_bytes_bf16": bbytes,
            "linear_weight_ratio": qbytes / bbytes,
            "cuda_memory_delta_bytes": mem_delta,
            "vs_bf16": c,
            "max_prob_diff": c["max_prob_diff"],
            "label_agreement": c["agreement"],
            "vocab_argmax_agreement": (lb.argmax(-1) == lq.argmax(-1)).float().mean().item(),
            "max_logit_diff": (lb - lq).abs().max().item(),
            "logit_std": lb.std().item(),
            "tolerance": TOL[quant],
            "min_agreement": MIN_AGREEMENT[quant],
            "info_quantization": info["quantization"],
        }
        require(len(linears) > 0 and len(quantized) == len(linears),
                f"{len(quantized)} of {len(linears)} decoder linears are {cls.__name__}")
        require(all(m.weight.dtype == want_dtype for m in quantized), f"weights are {fig['weight_dtypes']}, not {want_dtype}")
        require(foot_q < foot_b, f"footprint {foot_q} not below bf16's {foot_b}")
        # nf4: half a byte per weight plus constants; int8: one byte plus a scale per row (bf16: two bytes)
        require(fig["linear_weight_ratio"] < (0.4 if quant == "4bit" else 0.6),
                f"linear weights take {fig['linear_weight_ratio']:.2f} of bf16's bytes")
        require(close(c, TOL[quant], MIN_AGREEMENT[quant]), f"{quant} label probabilities differ from bf16: {c}")
        return fig
    finally:
        del model
        free_memory()


def timed_linear(m: int, k: int, n: int, dtype, dev: torch.device, seconds: float) -> float:
    """Best time (s) of F.linear(x[m,k], w[n,k]) over about `seconds`."""
    x = torch.randn(m, k, device=dev, dtype=dtype)
    w = torch.randn(n, k, device=dev, dtype=dtype)
    torch.nn.functional.linear(x, w)
    sync(dev)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == float("inf"):
        t = time.perf_counter()
        torch.nn.functional.linear(x, w)
        sync(dev)
        best = min(best, time.perf_counter() - t)
    del x, w
    return best


def mfu_setup(ctx: Ctx) -> tuple[dict, str, int, list[int]]:
    """(shape, dtype, prompts, budgets) for the throughput check on this device."""
    from persona_bench.models.devices import resolve_dtype

    seven_b = ctx.args.shape == "7b" or (ctx.args.shape == "auto" and ctx.cuda)
    shape = SEVEN_B if seven_b else SMALL
    dtype = "bf16" if ctx.cuda else resolve_dtype("auto", ctx.dev)
    n = ctx.args.prompts or (512 if seven_b else 16)
    budgets = ctx.args.budgets or ([16384, 65536] if seven_b else [1024, 4096])
    return shape, dtype, n, budgets


def check_matmul(ctx: Ctx) -> dict:
    from persona_bench.models.cost import matmul_tflops
    from persona_bench.models.devices import TORCH_DTYPES

    shape, dtype, _, budgets = mfu_setup(ctx)
    n = 8192 if ctx.cuda else 1024
    secs = 1.0 if ctx.cuda else 0.5
    rate = matmul_tflops(dtype, str(ctx.dev), n=n, seconds=secs)
    h, f = shape["hidden_size"], shape["intermediate_size"]
    m = min(budgets)  # rows of the smaller budget's batches
    dt = TORCH_DTYPES[dtype]
    # One decoder layer's projections: q, k, v, o (h -> h), gate and up (h -> f), down (f -> h).
    parts = {"h_to_h": (h, h, 4), "h_to_f": (h, f, 2), "f_to_h": (f, h, 1)}
    total_flops = total_time = 0.0
    per_shape = {}
    for name, (k, nn, count) in parts.items():
        t = timed_linear(m, k, nn, dt, ctx.dev, secs / 2)
        per_shape[f"{name}_tflops"] = 2 * m * k * nn / t / 1e12
        total_flops += count * 2 * m * k * nn
        total_time += count * t
    layer_rate = total_flops / total_time / 1e12
    ctx.shared["matmul"] = {"square": rate, "layer": layer_rate}
    fig = {"dtype": dtype, "square_n": n, "square_tflops": rate, "layer_rows": m, "layer_mix_tflops": layer_rate,
           **per_shape}
    require(rate > 0 and layer_rate > 0, "non-positive matmul rate")
    return fig


def build_random_llama(shape: dict, dtype: str, dev: torch.device):
    """A random-weight Llama of `shape`, created directly on `dev` in `dtype` (no CPU init, no files)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from persona_bench.models.devices import TORCH_DTYPES

    cfg = LlamaConfig(**shape, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=TORCH_DTYPES[dtype])
    return model.eval().requires_grad_(False)


def check_throughput(ctx: Ctx) -> dict:
    from persona_bench.backends.hf import score_batch
    from persona_bench.models.loading import count_params
    from persona_bench.scoring.requests import Request

    ctx.drop_models()
    shape, dtype, n_prompts, budgets = mfu_setup(ctx)
    repeats = ctx.args.repeats or (3 if ctx.cuda else 1)
    if "matmul" not in ctx.shared:
        check_matmul(ctx)
    rates = ctx.shared["matmul"]
    t = time.perf_counter()
    model = build_random_llama(shape, dtype, ctx.dev)
    sync(ctx.dev)
    build_s = time.perf_counter() - t
    try:
        total, non_emb = count_params(model)
        rng = random.Random(ctx.args.seed)
        v = shape["vocab_size"]
        reqs = []
        for _ in range(n_prompts):  # ~160 tokens: uniform 128..192
            reqs.append(Request([1] + [rng.randrange(10, v) for _ in range(rng.randint(127, 191))],
                                label_ids=rng.sample(range(10, v), 4)))
        n_tok = sum(len(r.prompt_ids) for r in reqs)
        h, layers = shape["hidden_size"], shape["num_hidden_layers"]
        # Useful model FLOPs: 2 x non-embedding params per token, causal attention (QK^T and AV over
        # the earlier positions: 2 x layers x hidden x len^2 per prompt), the output layer at one position.
        flops_params = 2 * non_emb * n_tok
        flops_attn = 2 * layers * h * sum(len(r.prompt_ids) ** 2 for r in reqs)
        flops_head = 2 * h * v * n_prompts
        fig = {"shape": shape, "dtype": dtype, "repeats": repeats, "params": total, "non_embedding_params": non_emb,
               "attn_implementation": model.config._attn_implementation, "build_seconds": build_s,
               "prompts": n_prompts, "tokens": n_tok, "mean_prompt_tokens": n_tok / n_prompts,
               "matmul_square_tflops": rates["square"], "matmul_layer_tflops": rates["layer"]}
        results = {}
        for b in budgets:
            batches = make_batches(reqs, b)
            padded = sum(len(bt) * max(len(reqs[i].prompt_ids) for i in bt) for bt in batches)
            first = [reqs[i] for i in batches[0]]
            score_batch(model, first, "causal", "letter", 0)  # warm-up on the widest batch
            sync(ctx.dev)
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats(ctx.dev)
            times = []
            for _ in range(repeats):  # the median of whole passes over all prompts
                t = time.perf_counter()
                res = score_all(model, reqs, "letter", 0, b)
                sync(ctx.dev)
                times.append(time.perf_counter() - t)
            s = sorted(times)[len(times) // 2]
            results[b] = res
            tf_params = flops_params / s / 1e12
            tf_all = (flops_params + flops_attn + flops_head) / s / 1e12
            fig[f"budget_{b}"] = {
                "batches": len(batches),
                "rows_per_batch": len(batches[0]),
                "seconds": s,
                "seconds_all": times,
                "prompts_per_s": n_prompts / s,
                "tokens_per_s": n_tok / s,
                "padded_tokens_per_s": padded / s,
                "padding_share": 1 - n_tok / padded,
                "tflops_params": tf_params,
                "tflops_with_attention": tf_all,
                "mfu": tf_all / rates["square"],
                "mfu_params_only": tf_params / rates["square"],
                "mfu_vs_layer_matmul": tf_all / rates["layer"],
                "peak_memory_gib": torch.cuda.max_memory_allocated(ctx.dev) / 2**30 if ctx.cuda else None,
                "finite": all(math.isfinite(x) for r in res for x in r.scores),
            }
        best = max(budgets, key=lambda b: fig[f"budget_{b}"]["tokens_per_s"])
        fig["best_budget"] = best
        fig["tokens_per_s"] = fig[f"budget_{best}"]["tokens_per_s"]
        fig["prompts_per_s"] = fig[f"budget_{best}"]["prompts_per_s"]
        fig["tflops"] = fig[f"budget_{best}"]["tflops_with_attention"]
        fig["mfu"] = fig[f"budget_{best}"]["mfu"]
        if len(budgets) > 1:  # the same prompts in other batches: a large-model batch-invariance figure
            fig["budgets_compared"] = compare(results[budgets[0]], results[budgets[-1]], TOL[dtype])
        require(all(fig[f"budget_{b}"]["finite"] for b in budgets), "non-finite scores")
        # Above the matmul rate means a wrong FLOP count; on a shared CPU the two timings can drift apart.
        require(fig["mfu"] > 0 and (fig["mfu"] < 1.2 or not ctx.cuda), f"implausible MFU {fig['mfu']:.3f}")
        return fig
    finally:
        del model
        free_memory()


CHECKS = {
    "sdpa": check_sdpa,
    "bf16_letter": lambda ctx: check_bf16(ctx, "letter"),
    "bf16_cloze": lambda ctx: check_bf16(ctx, "cloze"),
    "batch_invariance": check_batch_invariance,
    "bnb_4bit": lambda ctx: check_bnb(ctx, "4bit"),
    "bnb_8bit": lambda ctx: check_bnb(ctx, "8bit"),
    "matmul": check_matmul,
    "throughput": check_throughput,
}

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
    "matmul": ["dtype", "square_n", "square_tflops", "layer_mix_tflops"],
    "throughput": ["dtype", "non_embedding_params", "build_seconds", "best_budget", "prompts_per_s", "tokens_per_s",
                   "tflops", "mfu"],
}


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v) or "-"
    return str(v)


def headline(name: str, fig: dict) -> str:
    parts = []
    for key in HEADLINE.get(name, []):
        v = fig
        for k in key.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            parts.append(f"{key.split('.')[-1]}={fmt(v)}")
    if name == "throughput":
        for k, v in fig.items():
            if k.startswith("budget_") and isinstance(v, dict):
                parts.append(f"[{k}: {v['prompts_per_s']:.1f} prompts/s {v['tokens_per_s']:.0f} tok/s "
                             f"{v['tflops_with_attention']:.3g} TFLOP/s mfu={v['mfu']:.3f}]")
    return " ".join(parts)


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available) | cuda | cuda:N | cpu")
    ap.add_argument("--out", default="gpu_check.json", help="JSON file for every figure")
    ap.add_argument("--full", action="store_true", help="run the bitsandbytes checks on the CPU too (its CPU backend)")
    ap.add_argument("--shape", default="auto", choices=("auto", "7b", "small"),
                    help="throughput model: 7b (Llama-2-7B shape) or small (4 layers, width 512); auto: 7b on CUDA")
    ap.add_argument("--checks", default=",".join(CHECKS), help="comma-separated subset of: " + ", ".join(CHECKS))
    ap.add_argument("--requests", type=int, default=0,
                    help="tiny-model requests per method (0: 128 on CUDA, 16 on the CPU)")
    ap.add_argument("--prompts", type=int, default=0,
                    help="throughput prompts (0: 512 for the 7B shape, 16 for the CPU stand-in)")
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="throughput token budgets, comma-separated (default 16384,65536; CPU stand-in 1024,4096)")
    ap.add_argument("--repeats", type=int, default=0,
                    help="timed passes per throughput budget, median reported (0: 3 on CUDA, 1 on the CPU)")
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
              "checks": {}}
    print(f"gpu_check on {report.get('gpu', dev)}: " + " ".join(f"{k}={v}" for k, v in report["versions"].items()),
          flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every check, so a run cut short still leaves its figures
        report["wall_seconds"] = round(time.perf_counter() - t_start, 2)
        report["ok"] = not any(e["status"] == "fail" for e in report["checks"].values())
        out.write_text(json.dumps(jsonable(report), indent=2) + "\n")

    workdir = (tempfile.TemporaryDirectory(prefix="gpu_check_") if args.workdir is None
               else contextlib.nullcontext(args.workdir))
    with workdir as wd:
        ctx = Ctx(args, dev, Path(wd))
        for name in names:
            t = time.perf_counter()
            entry: dict = {}
            try:
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
