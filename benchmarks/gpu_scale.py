"""Real shapes on one GPU: random-weight Llama-2-7B- and 13B-shaped models, scored and generating
through the project's own paths on prompts of the paper grid's lengths. The steps of
benchmarks/gpu_check.py after its tiny-model checks (run them from there: it times, isolates and
records every step):

  matmul          the bf16 8192^3 matmul rate (the measured square ceiling)
  score_<size>    letter and cloze scoring (backends.hf.score_batch, run.batching's batches) of random
                  token ids with the lengths of the paper grid's prompts (benchmarks/paper_lengths.py
                  measured them with the embedded model's tokenizer): prompts/s, tokens/s, achieved
                  TFLOP/s and MFU against the GPU's datasheet peak (dense bf16), the 8192^3 rate and the
                  matmul ceiling measured on the model's own shapes (models.cost.shape_ceiling); peak memory
  generate_<size> greedy generation through HFBackend.generate (scoring.generate): generated tokens/s,
                  prompts/s, and the decode steps' bytes (weights + key/value cache read per step) per
                  second against the GPU's memory bandwidth
  agree_<size>    the same random weights in bf16 and upcast to fp32 (exactly the same values): argmax
                  agreement of the answer logits (letter labels, cloze options) on a subset

Weights: built on the device from the config with transformers' initialisation skipped, then one
seeded normal_ per matrix (std 0.02, norms 1): seconds for 13B, no CPU copy, the same weights every
build. The norms are fused and the output layer hooked as models.loading.load_model does.
--small swaps in two-layer stand-ins of width 128 and 160 (vocabulary 4,096) and a few prompts: the
whole flow in seconds on a CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path

import torch
from gpu_common import (
    MIN_AGREEMENT,
    TOL,
    CheckFailed,
    Skip,
    compare,
    free_memory,
    make_batches,
    require,
    score_all,
    sync,
)

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = ROOT / "benchmarks" / "results" / "paper_prompt_lengths.json"  # written by benchmarks/paper_lengths.py
SHAPES = {  # Llama-2's published configs
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=40, vocab_size=32000),
}
SMALL_SHAPES = {  # --small: the same flow on a CPU in seconds
    "7b": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=4, vocab_size=4096),
    "13b": dict(hidden_size=160, intermediate_size=432, num_hidden_layers=2, num_attention_heads=5,
                num_key_value_heads=5, vocab_size=4096),
}
# Prompts per step: (letter, cloze, generation, agreement subset); --small: a few of each.
SIZES = {"7b": (2048, 1024, 256, 256), "13b": (1024, 512, 256, 256), "small": (12, 8, 4, 12)}
LABEL_IDS = [319, 350, 315, 360]  # " A" .. " D" in Llama-2's vocabulary (any four ids would do: random weights)
# Dense bf16 peak (TFLOP/s, without sparsity) and memory bandwidth (TB/s), vendors' datasheets: the first
# entry whose name the device's name contains.
GPU_SPECS = (("H200 NVL", 835, 4.8), ("H200", 989, 4.8), ("H100 NVL", 835, 3.9), ("H100 PCIe", 756, 2.0),
             ("H100", 989, 3.35), ("A100-SXM4-80GB", 312, 2.039), ("A100 80GB PCIe", 312, 1.935), ("A100", 312, 1.555))


def gpu_spec(name: str | None) -> dict:
    """{'peak_bf16_tflops', 'bandwidth_tbps', 'spec'} of a GPU by its name; Nones when unknown (and on a CPU)."""
    for key, tflops, tbps in GPU_SPECS:
        if name and key.lower() in name.lower():
            return {"spec": key, "peak_bf16_tflops": tflops, "bandwidth_tbps": tbps}
    return {"spec": None, "peak_bf16_tflops": None, "bandwidth_tbps": None}


def ratio(a, b):
    return a / b if a is not None and b else None


@contextlib.contextmanager
def skip_init():
    """transformers' weight initialisation off (seconds of CPU-bound random numbers for 13B parameters)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = contextlib.nullcontext
    with no_init_weights():
        yield


def build_random_llama(shape: dict, dtype: str, dev: torch.device, seed: int = 0):
    """A random-weight Llama of `shape` created on `dev` in `dtype`: no CPU copy, no files, the same
    weights for the same seed; norms fused and the output layer hooked as load_model does."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from persona_bench.models.devices import TORCH_DTYPES, attention_kernels
    from persona_bench.models.fastpath import contiguous_head, fuse_norms

    attention_kernels(dev)  # as load_model does
    cfg = LlamaConfig(**shape, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(dev), skip_init():
        model = AutoModelForCausalLM.from_config(cfg, dtype=TORCH_DTYPES[dtype])
    gen = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0) if p.dim() == 1 else p.normal_(0.0, cfg.initializer_range, generator=gen)
    model.generation_config.eos_token_id = None  # every row writes max_new_tokens: a fixed amount of decoding
    model.eval().requires_grad_(False)
    fuse_norms(model)
    contiguous_head(model)
    return model


def scale_tokenizer(vocab: int):
    """A word-level tokenizer of the model's vocabulary ('w<id>'; pad 0, bos 1, no eos), so that generation
    decodes and stops as with a real one (no weights' tokenizer is available offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", unk_token="<unk>")


def paper_requests(n: int, method: str, vocab: int, seed: int) -> list:
    """n requests of random token ids with the lengths of n prompts drawn from the paper grid's (letter: the
    prompt; cloze: the prompt and its four options; generate: the letter prompt, labels read as for letter)."""
    from persona_bench.scoring.requests import Request

    rows = json.loads(LENGTHS.read_text())["cloze" if method == "cloze" else "letter"]
    rng = random.Random(f"{seed}:{method}:{n}")
    picked = rng.sample(rows, n) if n <= len(rows) else [rng.choice(rows) for _ in range(n)]
    ids = lambda k: [rng.randrange(3, vocab) for _ in range(k)]  # noqa: E731 - 0..2 are pad, bos, unk
    if method == "cloze":
        return [Request([1] + ids(r[0] - 1), option_ids=[ids(k) for k in r[1:]]) for r in picked]
    return [Request([1] + ids(r - 1), label_ids=list(LABEL_IDS)) for r in picked]


# --------------------------------------------------------------------------- the steps' setup
def setup(ctx, size: str) -> tuple:
    """(model, facts) of one size, built once and kept on ctx while consecutive steps use it."""
    from persona_bench.models.loading import count_params

    key = (size, "bf16")
    held = ctx.shared.get("scale_model")
    if held and held[0] == key:
        return held[1], held[2]
    release(ctx)
    ctx.drop_models()
    shape = (SMALL_SHAPES if ctx.args.small else SHAPES)[size]
    t = time.perf_counter()
    model = build_random_llama(shape, "bf16", ctx.dev, ctx.args.seed)
    sync(ctx.dev)
    total, non_emb = count_params(model)
    facts = {"shape": shape, "dtype": "bf16", "params": total, "non_embedding_params": non_emb,
             "build_seconds": round(time.perf_counter() - t, 2), "attn_implementation": model.config._attn_implementation,
             "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
             "prompt_lengths": json.loads(LENGTHS.read_text())["tokenizer"]}
    ctx.shared["scale_model"] = (key, model, facts)
    return model, facts


def release(ctx) -> None:
    if ctx.shared.pop("scale_model", None) is not None:
        free_memory()


def sizes(ctx, size: str) -> tuple:
    return SIZES["small" if ctx.args.small else size]


def reset_peak(ctx) -> None:
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.dev)


def peak_gib(ctx):
    return round(torch.cuda.max_memory_allocated(ctx.dev) / 2**30, 2) if ctx.cuda else None


def square_rate(ctx) -> float:
    if "matmul" not in ctx.shared:
        check_matmul(ctx)
    return ctx.shared["matmul"]


def check_matmul(ctx) -> dict:
    from persona_bench.models.cost import matmul_tflops

    n = 1024 if ctx.args.small or not ctx.cuda else 8192
    rate = matmul_tflops("bf16", str(ctx.dev), n=n, seconds=0.2 if ctx.args.small else 1.0)
    ctx.shared["matmul"] = rate
    spec = gpu_spec(ctx.gpu_name)
    require(rate > 0, "non-positive matmul rate")
    return {"dtype": "bf16", "square_n": n, "square_tflops": rate, **spec,
            "square_vs_peak": ratio(rate, spec["peak_bf16_tflops"])}


# --------------------------------------------------------------------------- scoring
def timed_passes(ctx, fn, repeats: int) -> list[float]:
    """Seconds of `repeats` whole passes (at least one; fewer when the time budget runs out)."""
    times: list[float] = []
    while len(times) < repeats and (not times or ctx.time_left() > 2 * times[-1]):
        t = time.perf_counter()
        fn()
        sync(ctx.dev)
        times.append(time.perf_counter() - t)
    return times


def check_score(ctx, size: str) -> dict:
    from persona_bench.models.cost import auto_batch_tokens, layer_shapes, scoring_flops, shape_ceiling

    model, facts = setup(ctx, size)
    shapes = layer_shapes(model)
    square, spec = square_rate(ctx), gpu_spec(ctx.gpu_name)
    n_letter, n_cloze, _, _ = sizes(ctx, size)
    repeats = ctx.args.repeats or (2 if ctx.cuda else 1)
    fig = {**facts, **spec, "matmul_square_tflops": square, "repeats": repeats}
    for method, n in (("letter", n_letter), ("cloze", n_cloze)):
        reqs = paper_requests(n, method, shapes.vocab, ctx.args.seed)
        work = scoring_flops(shapes, reqs)
        total = work["linear"] + work["attention"] + work["head"]
        auto = auto_batch_tokens(model, ctx.dev, method)  # the budget model.batch_tokens=0 gives (run.py's GPU configs)
        budgets = ctx.args.budgets or sorted({auto, 1024 if ctx.args.small else 16384})
        out = {"prompts": n, "tokens": work["tokens"], "mean_prompt_tokens": work["tokens"] / n, "auto_budget": auto,
               "tflop": {k: work[k] / 1e12 for k in ("linear", "attention", "head")}}
        results = {}
        for b in budgets:
            batches = make_batches(reqs, b, packed=method == "cloze")
            if not ctx.args.small:  # warm-up on the widest batch (kernel choice, allocations)
                score_all(model, [reqs[i] for i in batches[0]], method, 0, b)
                sync(ctx.dev)
            reset_peak(ctx)
            box = {}
            times = timed_passes(ctx, lambda: box.update(res=score_all(model, reqs, method, 0, b)), repeats)
            s = min(times)
            results[b] = box["res"]
            per_pass = max(1, work["tokens"] // len(batches))
            ceil = shape_ceiling(shapes, "bf16", str(ctx.dev), per_pass, max(1, work["head_rows"] // len(batches)),
                                 seconds_per_shape=0.05 if ctx.args.small else 0.3)
            body = work["linear"] + work["attention"]
            mix = total / (body / ceil["body"] + work["head"] / max(ceil["head"], 1e-9))
            tflops = total / s / 1e12
            out[f"budget_{b}"] = {
                "batches": len(batches), "rows_first_batch": len(batches[0]), "seconds": s, "seconds_all": times,
                "prompts_per_s": n / s, "tokens_per_s": work["tokens"] / s, "tflops": tflops,
                "mfu": ratio(tflops, spec["peak_bf16_tflops"]), "vs_square_matmul": tflops / square,
                "shape_ceiling_tflops": mix, "vs_shape_ceiling": tflops / mix, "peak_memory_gib": peak_gib(ctx),
                "finite": all(math.isfinite(x) for r in box["res"] for x in r.scores)}
        best = max(budgets, key=lambda b: out[f"budget_{b}"]["tokens_per_s"])
        out.update(best_budget=best, **{k: out[f"budget_{best}"][k] for k in
                                        ("prompts_per_s", "tokens_per_s", "tflops", "mfu", "vs_square_matmul",
                                         "vs_shape_ceiling", "peak_memory_gib")})
        if len(budgets) > 1:  # the same requests in other batches: batch invariance at scale
            out["budgets_compared"] = compare(results[budgets[0]], results[budgets[-1]], TOL["bf16"])
        fig[method] = out
        require(all(out[f"budget_{b}"]["finite"] for b in budgets), f"non-finite {method} scores")
        require(out["vs_square_matmul"] < 1.2 or not ctx.cuda, f"implausible {method} rate: a wrong FLOP count?")
    return fig


# --------------------------------------------------------------------------- generation
def check_generate(ctx, size: str) -> dict:
    from persona_bench.backends.hf import HFBackend
    from persona_bench.config.schema import GenerateConfig
    from persona_bench.models.cost import layer_shapes
    from persona_bench.run.batching import is_out_of_memory

    model, facts = setup(ctx, size)
    shapes = layer_shapes(model)
    spec = gpu_spec(ctx.gpu_name)
    n = sizes(ctx, size)[2]
    new = ctx.args.new_tokens or (8 if ctx.args.small else 32)
    backend = HFBackend(model, scale_tokenizer(shapes.vocab), {"device": str(ctx.dev)}, "causal", 0)
    reqs = paper_requests(n, "generate", shapes.vocab, ctx.args.seed)
    budget = backend.batch_budget("generate")
    cfg = model.config
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    # Bytes each decode step reads: every linear weight (the embedding is a row lookup) and the cache so far.
    weight_bytes = 2 * (shapes.body_params + shapes.head_params)
    fig = {**facts, **spec, "prompts": n, "max_new_tokens": new, "decoding": "greedy", "batch_budget": budget,
           "kv_bytes_per_token": kv_per_token, "decode_weight_bytes": weight_bytes, "oom_halvings": 0}

    def run(batches, k: int) -> tuple[float, int]:
        settings = GenerateConfig(decoding="greedy", max_new_tokens=k)
        t, made = time.perf_counter(), 0
        for b in batches:
            made += sum(r.n_new_tokens or 0 for r in backend.generate([reqs[i] for i in b], settings))
        sync(ctx.dev)
        return time.perf_counter() - t, made

    while True:
        batches = make_batches(reqs, budget, extra=new)
        try:
            run(batches[:1], 2)  # warm-up: the widest batch's prefill and a decode step
            reset_peak(ctx)
            t1, _ = run(batches, 1)  # the prompt passes and one token each
            tn, made = run(batches, new)
            break
        except Exception as e:
            if not is_out_of_memory(e) or budget <= 1024:
                raise
        free_memory()  # outside the except block: its traceback no longer holds the failed batch's tensors
        budget //= 2  # as run.batching does on out-of-memory
        fig["oom_halvings"] += 1
    steps = new - 1  # decode steps beyond the first token
    kv_bytes = sum(len(b) * kv_per_token * (max(len(reqs[i].prompt_ids) for i in b) + s)
                   for b in batches for s in range(1, new))
    moved = len(batches) * steps * weight_bytes + kv_bytes
    decode_s = max(tn - t1, 1e-9)
    fig.update(batches=len(batches), rows_first_batch=len(batches[0]), batch_budget_used=budget,
               seconds=tn, seconds_prefill_and_first_token=t1, new_tokens=made, tokens_per_s=made / tn,
               prompts_per_s=n / tn, decode_seconds=decode_s, decode_tokens_per_s=n * steps / decode_s,
               decode_bytes=moved, decode_bytes_per_s=moved / decode_s, peak_memory_gib=peak_gib(ctx))
    if spec["bandwidth_tbps"]:
        limit_s = moved / (spec["bandwidth_tbps"] * 1e12)  # decode time if every byte moved at the datasheet rate
        fig.update(bandwidth_limit_tokens_per_s=n * steps / limit_s, fraction_of_bandwidth=limit_s / decode_s)
    require(made == n * new, f"{made} tokens generated, not {n} x {new} (no end-of-sequence token here)")
    return fig


# --------------------------------------------------------------------------- bf16 against fp32
def check_agree(ctx, size: str) -> dict:
    """The answers of the bf16 model and of the same weights upcast to fp32 (TF32 off), on one subset."""
    model, facts = setup(ctx, size)
    need = 2 * (2 * facts["weight_bytes"])  # twice the fp32 weights: 13B (52 GB) on an H200, not on an 80 GB H100
    if ctx.cuda and need > torch.cuda.get_device_properties(ctx.dev).total_memory:
        release(ctx)
        raise Skip(f"fp32 {size} wants ~{need / 2**30:.0f} GiB, twice its weights: more than this GPU has "
                   "(agreement is checked on 7B)")
    n = sizes(ctx, size)[3]
    vocab = model.config.vocab_size
    sets = {"letter": paper_requests(n, "letter", vocab, ctx.args.seed + 1),
            "cloze": paper_requests(n // 2, "cloze", vocab, ctx.args.seed + 1)}
    budget = 1024 if ctx.args.small else 16384
    got = {m: score_all(model, r, m, 0, budget) for m, r in sets.items()}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ctx.shared.pop("scale_model")  # converted in place: not bf16 any more
        model.float()
        t = time.perf_counter()
        ref = {m: score_all(model, r, m, 0, budget) for m, r in sets.items()}
        sync(ctx.dev)
        fp32_s = time.perf_counter() - t
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        del model
        free_memory()
    fig = {**facts, "fp32_seconds": fp32_s, "tf32": False, "tolerance": TOL["bf16"],
           "min_agreement": MIN_AGREEMENT["bf16"]}
    for m in sets:
        fig[m] = compare(ref[m], got[m], TOL["bf16"])
    fig["agreement"] = min(fig[m]["agreement"] for m in sets)
    for m in sets:
        if not fig[m]["finite"] or fig[m]["agreement"] < MIN_AGREEMENT["bf16"]:
            raise CheckFailed(f"bf16 {m} answers differ from fp32's on the same weights: {fig[m]}")
    return fig


STEPS = {"matmul": check_matmul}
for _size in SHAPES:
    STEPS[f"score_{_size}"] = lambda ctx, s=_size: check_score(ctx, s)
    STEPS[f"generate_{_size}"] = lambda ctx, s=_size: check_generate(ctx, s)
    STEPS[f"agree_{_size}"] = lambda ctx, s=_size: check_agree(ctx, s)
# Seconds each step may take on an H100/H200 (a step starts only when the budget has this much left):
# about 1.25x what each took on an H200 (2026-11-30: 1, 62, 10, 17, 68, 12 and 32 s); --small runs are
# a few seconds each.
ESTIMATE = {"matmul": 5, "score_7b": 80, "generate_7b": 15, "agree_7b": 25, "score_13b": 85, "generate_13b": 20,
            "agree_13b": 40}
HEADLINE = {
    "matmul": ["dtype", "square_n", "square_tflops", "spec", "peak_bf16_tflops", "square_vs_peak"],
    **{f"score_{s}": ["non_embedding_params", "letter.prompts_per_s", "letter.tokens_per_s", "letter.tflops",
                      "letter.mfu", "letter.vs_shape_ceiling", "cloze.tokens_per_s", "cloze.mfu",
                      "letter.peak_memory_gib"] for s in SHAPES},
    **{f"generate_{s}": ["prompts", "max_new_tokens", "tokens_per_s", "decode_tokens_per_s",
                         "bandwidth_limit_tokens_per_s", "fraction_of_bandwidth", "peak_memory_gib"] for s in SHAPES},
    **{f"agree_{s}": ["letter.agreement", "letter.max_prob_diff", "cloze.agreement", "cloze.max_prob_diff",
                      "letter.n"] for s in SHAPES},
}
