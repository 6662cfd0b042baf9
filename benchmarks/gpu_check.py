"""A check of persona-bench on one CUDA GPU in under ten minutes: no downloads, no MMLU data, no weights.

On an H100 or H200 (the device machine: benchmarks/README.md#gpu-check says what to carry), from the
repository root, with the wheels carried in .whl/ (transformers 5.24.0, tokenizers 0.23.3,
bitsandbytes 0.50.2, omegaconf 2.3.1, antlr4-python3-runtime 4.9.3; the machine's own torch,
accelerate, huggingface_hub and pandas are used):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD    # the wheels, and persona_bench from this checkout (not installed there)
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/ --budget-s 540

Elsewhere persona_bench is imported as installed (pip install -r requirements.txt: editable); the
script never adds it to sys.path. tests/tiny_models.py is loaded by its file path.

On a CPU: --small runs the whole flow with two-layer stand-ins of the 7B and 13B shapes (bitsandbytes
skipped) in about a minute; --full adds the bitsandbytes checks (its CPU backend):

    python benchmarks/gpu_check.py --small --out /tmp/
    python benchmarks/gpu_check.py --small --checks score_7b,generate_7b,agree_7b --out /tmp/

Checks, in this order, each isolated (a failing one records its exception; the others still run):

  sdpa              the model loaded by load_model uses attn_implementation "sdpa", and a scoring pass
                    really calls F.scaled_dot_product_attention (on CUDA: the attention kernels it ran)
  bf16_letter       score_batch(letter) in bf16 against fp32 on the same device, tiny local Llama
                    loaded by persona_bench.models.loading.load_model (source=local)
  bf16_cloze        the same for cloze
  batch_invariance  the same requests under token budgets 1 (each prompt alone, no padding), 512 and
                    16384: predictions equal, probabilities close (fp32 and bf16, letter and cloze)
  bnb_4bit          load_model(quantization=4bit): Linear4bit modules, uint8 weights, a smaller
                    footprint, label probabilities and vocabulary argmax close to bf16
  bnb_8bit          the same for 8bit (Linear8bitLt, int8 weights)
  matmul, score_7b, generate_7b, agree_7b, score_13b, generate_13b, agree_13b
                    random-weight Llama-2-7B- and 13B-shaped models on prompts of the paper grid's
                    lengths: scoring MFU, tokens/s, peak memory, generation against the memory
                    bandwidth, bf16 against fp32 (benchmarks/gpu_scale.py says how)

A time budget (--budget-s) starts a check only when the time left covers its expected length and
prints `CHECK <name> SKIP time budget: ...` otherwise, so the run ends inside the device machine's
ten-minute command limit. Prints one line per check, `CHECK <name> ok|FAIL|SKIP <figures>`, writes
every figure with the package versions and the device name to --out (a file, or a folder that gets
gpu_check_<device>_<date>.json; default benchmarks/results/) after every check, and exits 1 when
any check failed. The tiny model is tests/tiny_models.py's Llama with its weight matrices scaled
(SHARPEN below), so that its predictions depend on the prompt. Figures: prob = softmax over the
answer labels (letter) or over the options' mean log-likelihoods (cloze); a comparison passes when
no probability moves more than its tolerance and enough predictions agree (gpu_common.TOL,
MIN_AGREEMENT); "decisive" rows (reference top-two gap over twice the tolerance) are reported, as
rows that cannot flip within tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

# gpu_common.py and gpu_scale.py are this script's neighbours in benchmarks/ (first on sys.path when a
# script of that folder runs).
import gpu_scale
import torch
from gpu_common import (
    MIN_AGREEMENT,
    TOL,
    Skip,
    close,
    compare,
    device_info,
    device_slug,
    fmt,
    free_memory,
    jsonable,
    make_batches,
    require,
    score_all,
    sync,
    versions,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ROOT / "tests" / "tiny_models.py"  # the test suite's tiny models, loaded by file path (tiny_models())
RESULTS = ROOT / "benchmarks" / "results"  # where --out's default folder puts gpu_check_<device>_<date>.json

LETTERS = ("A", "B", "C", "D")
# The test suite's tiny Llama (2 layers, width 32, weights ~N(0, 0.02)) gives every prompt nearly the
# same label probabilities and the same prediction, so agreement would prove nothing. The checks use
# it with every weight matrix scaled by SHARPEN: predictions then depend on the prompt (CPU, 64
# prompts: three of the four labels predicted, median top-two gap 0.11).
SHARPEN = 5.0


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


# --------------------------------------------------------------------------- context
class Ctx:
    """What the checks share: the device, the tiny model directory, loaded tiny models, requests."""

    def __init__(self, args, dev: torch.device, workdir: Path, gpu_name=None, deadline: float = math.inf):
        self.args, self.dev, self.workdir = args, dev, workdir
        self.cuda = dev.type == "cuda"
        self.gpu_name = gpu_name  # torch's name of the GPU (None on a CPU): gpu_scale.gpu_spec reads its peaks
        self.deadline = deadline  # time.perf_counter() by which the run ends (--budget-s)
        self._tiny_dir = None
        self._models: dict = {}
        self._requests: dict = {}
        self.shared: dict = {}

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

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


CHECKS = {
    "sdpa": check_sdpa,
    "bf16_letter": lambda ctx: check_bf16(ctx, "letter"),
    "bf16_cloze": lambda ctx: check_bf16(ctx, "cloze"),
    "batch_invariance": check_batch_invariance,
    "bnb_4bit": lambda ctx: check_bnb(ctx, "4bit"),
    "bnb_8bit": lambda ctx: check_bnb(ctx, "8bit"),
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
