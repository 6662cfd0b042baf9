"""Tensors shared by the scoring methods: padded batches, and output-layer logits computed only
where they are scored.

Padding never changes a result: causal prompts are left-padded with explicit position ids;
continuations and packed rows are right-padded and masked."""

from __future__ import annotations

import functools
import inspect
from typing import Optional

import torch

from persona_bench.models.cost import vocab_block  # the block size models.cost.shape_ceiling also times
from persona_bench.scoring.requests import Request


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, position_ids for left-padded causal prompts."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def right_pad(seqs: list[list[int]], pad_id: int, device, width: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def kv_cache_of(out):
    """The KV cache a forward pass returned: `cache` since transformers 5.2x, `past_key_values` before
    (vLLM 0.33's environment pins transformers 5.19, requirements-vllm.txt)."""
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


@functools.lru_cache(maxsize=None)
def cache_keyword(cls) -> str:
    """The forward keyword of a model class that takes a KV cache in this transformers version."""
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def text_config(model):
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def softcap(model, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def head_logits(model, hidden: torch.Tensor, ids: torch.Tensor, block: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output-layer logits at `ids` (rows x k) and the log-normaliser (rows), float32.

    The vocabulary is processed in blocks, so the full (rows x vocabulary) logit matrix
    never exists: for Gemma's 262,144-token head it would be 1 MB per row, and writing and
    re-reading it cost more than the matmul. Each (rows x block) block's log-sum-exp comes
    from torch's fused log-softmax kernel, which takes a row's max, its sum of exponentials
    and its output in one sweep while the row is in cache: lse = x_0 - log_softmax(x)_0.
    On the embedded model's head shape in bf16 (AMD EPYC, AVX512-BF16, 2 threads;
    benchmarks/head_lse.py) the head then took 1.12-1.15x its matmuls alone, against 1.30-1.39x
    for the running max, subtract, exp and sum over (block x rows) blocks it replaces; the
    normaliser moved by at most 1e-6."""
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if not (isinstance(head, torch.nn.Linear) and head.bias is None and weight is not None and weight.dtype == hidden.dtype):
        logits = softcap(model, head(hidden).float())  # quantised or biased heads: the module's own forward
        return logits.gather(1, ids), torch.logsumexp(logits, dim=-1)
    picked = softcap(model, torch.einsum("nh,nkh->nk", hidden, weight[ids]).float())
    hidden = hidden.contiguous()
    block = block or vocab_block(hidden.shape[0])
    starts = range(0, weight.shape[0], block)
    parts = torch.empty((len(starts), hidden.shape[0]), device=hidden.device)
    for k, start in enumerate(starts):
        blk = softcap(model, (hidden @ weight[start : start + block].T).float())  # (rows, block)
        parts[k] = blk[:, 0] - torch.log_softmax(blk, dim=-1)[:, 0]  # the block's log-sum-exp
    return picked, torch.logsumexp(parts, dim=0)


def label_matrix(requests: list[Request], device) -> torch.Tensor:
    """Label ids as a (rows x most labels) matrix; short rows repeat their last label (ignored)."""
    width = max(len(r.label_ids) for r in requests)
    return torch.tensor([r.label_ids + r.label_ids[-1:] * (width - len(r.label_ids)) for r in requests], device=device)
