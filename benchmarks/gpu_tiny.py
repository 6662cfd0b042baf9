"""The tiny-model checks of benchmarks/gpu_check.py (run them from there), and the context every check
shares (Ctx: the device, the time budget, models held between checks).

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

The tiny model is tests/tiny_models.py's Llama (loaded by its file path) with its weight matrices
scaled (SHARPEN below), so that its predictions depend on the prompt. Figures: prob = softmax over
the answer labels (letter) or over the options' mean log-likelihoods (cloze); a comparison passes
when no probability moves more than its tolerance and enough predictions agree (gpu_common.TOL,
MIN_AGREEMENT); "decisive" rows (reference top-two gap over twice the tolerance) are reported, as
rows that cannot flip within tolerance.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from pathlib import Path

import torch
from gpu_common import MIN_AGREEMENT, TOL, Skip, close, compare, free_memory, make_batches, require, score_all, sync

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ROOT / "tests" / "tiny_models.py"  # the test suite's tiny models, loaded by file path (tiny_models())

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
                if not close(c, TOL[dtype], MIN_AGREEMENT[dtype]):  # fp32: every decisive prediction equal
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


