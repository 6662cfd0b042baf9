"""What a model costs: weight bytes, activation bytes per batch token and the batch budget they allow,
FLOPs per token, and the matmul rates of this device (square, and on a model's own layer shapes)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from persona_bench.models.devices import TORCH_DTYPES


def bytes_per_param(dtype: str, quantization: str) -> float:
    if quantization == "4bit":
        return 0.55  # nf4 weights plus quantisation constants
    if quantization == "8bit":
        return 1.05
    return {"bf16": 2, "fp16": 2, "fp32": 4}[dtype]


CPU_BATCH_TOKENS = 4096  # on the CPU larger batches gain nothing and cost memory
# On a GPU, scoring batches of more padded tokens than this ran slower, not faster: with the batches
# cut longest first, fewer and wider batches pad more. 7B shape on an H200, 2,048 letter / 1,024 cloze
# prompts of the paper grid's lengths, TFLOP/s at 8,192 / 16,384 / 32,768 / 65,536 tokens: letter 449,
# 447, 430, 397 (262,144, what free memory allowed: 289); cloze 417, 397, 343, 257
# (benchmarks/results/gpu_check_h200_*). Generation keeps the memory-sized budget: a decoding step
# reads every weight once however many rows it has.
GPU_SCORING_TOKENS = 8192


def activation_bytes_per_token(model, method: str) -> int:
    """Memory one padded token of a batch needs beyond the weights, generously: one layer's transient
    activations (residual, normed input, attention projections, the MLP's three widths), plus, for
    cloze scoring, the prompt's key/value cache over every layer and the copies its option rows take, and
    for generation the key/value cache of every prompt and generated token."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", 0)
    inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "ffn_dim", None) or getattr(cfg, "d_ff", None) or 4 * hidden
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", 1)
    head_dim = getattr(cfg, "head_dim", None) or getattr(cfg, "d_kv", None) or hidden // max(heads, 1)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", 1)
    elem = 4 if model.dtype == torch.float32 else 2
    transient = (4 * hidden + 3 * inter + 2 * heads * head_dim) * elem
    kv = 2 * layers * kv_heads * head_dim * elem
    return transient + {"cloze": 5 * kv, "generate": kv}.get(method, 0)


def auto_batch_tokens(model, device: torch.device, method: str, fraction: float = 0.5) -> int:
    """The batch budget for model.batch_tokens=0: on a GPU, the padded tokens whose activations fit in
    `fraction` of the memory free once the weights are loaded (1,024 to 262,144, in steps of 256), at
    most GPU_SCORING_TOKENS for scoring; on the CPU 4,096. An estimate: out-of-memory still halves the
    budget and goes on."""
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    free, _ = torch.cuda.mem_get_info(device)
    budget = tokens_for_memory(free * fraction, activation_bytes_per_token(model, method))
    return budget if method == "generate" else min(budget, GPU_SCORING_TOKENS)


def tokens_for_memory(budget_bytes: float, per_token: int) -> int:
    return int(min(max(budget_bytes / max(per_token, 1), 1024), 262144)) // 256 * 256


def matmul_tflops(dtype: str = "bf16", device: str = "cpu", n: int = 2048, seconds: float = 1.0) -> float:
    """Dense n x n matmul rate in TFLOP/s, best of repeated timings for about `seconds`; one timing where a
    single product takes longer than that (bf16 on a CPU without bf16 units: 2.3 s at n=1,024, 55 s at 2,048)."""
    dev = torch.device(device)
    dt = TORCH_DTYPES[dtype]
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    torch.matmul(a, b)
    sync()
    once = time.perf_counter() - t
    best = once if once > seconds else best_seconds(lambda: torch.matmul(a, b), sync, seconds)
    return 2 * n**3 / best / 1e12


@functools.cache
def process_matmul_tflops(dtype: str, device: str) -> float:
    """matmul_tflops(dtype, device), measured once per process: every job's summary stamps the rate, and the jobs
    that one process runs (a sweep under Hydra's basic launcher, a test session) share one measurement. On a CPU
    at n=1,024, as the plan measures it: a bf16 rate on a CPU without bf16 units took 219 s at 2,048."""
    return matmul_tflops(dtype, device, n=1024 if torch.device(device).type == "cpu" else 2048)


def utilisation(tokens_per_s: float, non_embedding_params: float, tflops: float) -> float:
    """Achieved model FLOP rate (2 x params per token) over the matmul rate."""
    return tokens_per_s * 2 * non_embedding_params / (tflops * 1e12) if tflops > 0 else 0.0


@dataclass
class Shapes:
    """What a forward pass of one model costs: its linear layers by shape, its attention, its output layer."""
    linears: dict  # (in_features, out_features) -> how many layers of that shape, in the body
    body_params: int  # weights of the body's linear layers (2 x this = FLOPs per token)
    head_params: int  # vocabulary x hidden: 2 x this = FLOPs per position whose full distribution is needed
    hidden: int
    vocab: int
    n_heads: int
    head_dim: int
    windows: list  # per attention layer: None (full causal attention) or its sliding window


def layer_shapes(model, arch: str = "causal") -> Shapes:
    """The body's linear layers (every nn.Linear except the output layer) and the attention geometry.
    For seq2seq models the encoder and decoder layers are counted together (an upper bound per token)."""
    head = model.get_output_embeddings()
    linears: dict = {}
    body = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            key = (module.in_features, module.out_features)
            linears[key] = linears.get(key, 0) + 1
            body += module.in_features * module.out_features
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model")
    n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads")
    head_dim = getattr(cfg, "head_dim", None) or getattr(cfg, "d_kv", None) or hidden // n_heads
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers")
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * n_layers
    window = getattr(cfg, "sliding_window", None)
    windows = [window if t == "sliding_attention" and window else None for t in types]
    vocab, h = head.weight.shape if head is not None else (0, hidden)
    return Shapes(linears, body, vocab * h, hidden, vocab, n_heads, head_dim, windows)


class OptionTree(NamedTuple):
    """The options' input tokens (each option but its last token: the prompt's last position predicts every
    option's first token, each option token the next) as a prefix tree, one node per distinct prefix,
    a parent before its children. Options that begin with the same tokens share those nodes: the same
    tokens after the same prompt have the same states, so they are computed once."""
    tokens: list[int]  # the node's token
    depth: list[int]  # its place after the prompt (0: an option's first token)
    parent: list[int]  # the node before it, -1 for an option's first token
    through: list[list[int]]  # the options whose next token the node predicts (those that begin with its prefix)


def option_tree(options: list[list[int]]) -> OptionTree:
    """The prefix tree of the options' input tokens (OptionTree), nodes in the order the options meet them."""
    index: dict[tuple[int, int], int] = {}
    tree = OptionTree([], [], [], [])
    for j, o in enumerate(options):
        node = -1  # the prompt's last token
        for c in range(len(o) - 1):
            key = (node, o[c])
            if key not in index:
                index[key] = len(tree.tokens)
                tree.tokens.append(o[c])
                tree.depth.append(c)
                tree.parent.append(node)
                tree.through.append([])
            node = index[key]
            tree.through[node].append(j)
    return tree


def attention_flops(shapes: Shapes, prompt_ids: list[int], option_ids: list[list[int]] = ()) -> int:
    """Score and value matmuls (4 x heads x head_dim per query-key pair) over every layer, for a causal
    prompt and the option tokens fed after it, each distinct beginning of an option once
    (option_tree, as scoring.cloze packs them): each attends to the prompt and its own option's earlier tokens."""
    n = len(prompt_ids)
    depths = option_tree(option_ids).depth
    per_pair = 4 * shapes.n_heads * shapes.head_dim
    total = 0
    for w in shapes.windows:
        keys = sum(min(p + 1, w) if w else p + 1 for p in range(n))
        keys += sum(min(n + d + 1, w) if w else n + d + 1 for d in depths)
        total += per_pair * keys
    return total


def scoring_flops(shapes: Shapes, requests: list) -> dict:
    """The work scoring `requests` (scoring.requests.Request) needs: `tokens` through the body (each prompt, and
    each distinct beginning of its options but their last tokens: option_tree), `linear` 2 x the
    body's linear parameters per such token, `attention` (attention_flops), and the output layer wherever a full
    distribution is needed (`head_rows`: the prompt's last position and each of those option positions for
    cloze, the answer position for letter; `head` 2 x its parameters per row)."""
    fed = [len(option_tree(r.option_ids).tokens) for r in requests]
    tokens = sum(len(r.prompt_ids) for r in requests) + sum(fed)
    head_rows = len(requests) + sum(fed)
    return {"tokens": tokens, "head_rows": head_rows, "linear": 2 * shapes.body_params * tokens,
            "attention": sum(attention_flops(shapes, r.prompt_ids, r.option_ids) for r in requests),
            "head": 2 * shapes.head_params * head_rows}


def best_seconds(fn, sync, seconds: float, min_runs: int = 3) -> float:
    """The fastest of repeated timed calls for about `seconds`, and of at least `min_runs` (after one
    warm-up call): a shape slower than `seconds` per call (Gemma's whole output layer) is still timed
    more than once, so one slow moment of a shared machine cannot lower the ceiling."""
    fn()
    sync()
    best = float("inf")
    runs = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or runs < min_runs:
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
        runs += 1
    return best


def vocab_block(rows: int) -> int:
    """Vocabulary rows per output-layer block for `rows` hidden states: about a million fp32 logits
    (4 MB, a core's L2 and a share of L3), a power of two from 1,024 to 4,096."""
    return max(1024, min(4096, 1 << max(0, (2**20 // max(rows, 1)).bit_length() - 1)))


def shape_ceiling(shapes: Shapes, dtype: str, device: str, tokens: int, head_rows: int,
                  seconds_per_shape: float = 0.5) -> dict:
    """The device's matmul rate (TFLOP/s) on the model's own layer shapes at `tokens` rows: 'body' is
    FLOP-weighted over the body's linear layers (x @ W.T, as nn.Linear computes it); 'head' is the
    output layer at `head_rows` rows, the best of one matmul, (4,096-row vocabulary block x rows) products
    and (rows x vocab_block(rows) vocabulary rows) products, the layout scoring.logits.head_logits runs."""
    dev = torch.device(device)
    dt = TORCH_DTYPES[dtype]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    flops = secs = 0.0
    for (fin, fout), count in shapes.linears.items():
        x = torch.randn(tokens, fin, device=dev).to(dt)
        w = torch.randn(fout, fin, device=dev).to(dt)
        t = best_seconds(lambda: torch.nn.functional.linear(x, w), sync, seconds_per_shape)
        flops += count * 2 * tokens * fin * fout
        secs += count * t
    out = {"body": flops / secs / 1e12 if secs else 0.0, "head": 0.0}
    if shapes.head_params:
        x = torch.randn(head_rows, shapes.hidden, device=dev).to(dt)
        w = torch.randn(shapes.vocab, shapes.hidden, device=dev).to(dt)
        xt = x.T.contiguous()
        whole = best_seconds(lambda: torch.nn.functional.linear(x, w), sync, seconds_per_shape)

        def blocks():
            for s in range(0, shapes.vocab, 4096):
                w[s : s + 4096] @ xt

        def row_blocks():
            step = vocab_block(head_rows)
            for s in range(0, shapes.vocab, step):
                x @ w[s : s + step].T

        blocked = min(best_seconds(blocks, sync, seconds_per_shape), best_seconds(row_blocks, sync, seconds_per_shape))
        out["head"] = 2 * head_rows * shapes.head_params / min(whole, blocked) / 1e12
    return out
