"""Cloze scoring: each option's text as the continuation of the prompt; its log-likelihood summed and
per token. The prompt is encoded once.

Causal models: one pass per batch, each row holding its prompt and then its options' tokens at the
positions they would have after the prompt, as a prefix tree (option_tree: options that begin with
the same tokens share those positions, the same tokens after the same prompt), a 4-D attention mask
letting each position see the prompt and its own option's earlier tokens (where the model takes
one, checked once per model); else the prompt's KV cache is shared by the options' rows. Seq2seq:
the encoder output is shared."""

from __future__ import annotations

import functools
import logging
from typing import Optional

import torch

from persona_bench.models.cost import option_tree  # the packed rows' layout; models.cost counts the same work
from persona_bench.scoring.logits import cache_keyword, head_logits, kv_cache_of, left_pad, right_pad, text_config
from persona_bench.scoring.requests import Request, Result, softmax

log = logging.getLogger(__name__)


def cloze_result(lp_sum: list[float], n_tok: list[int], by: str) -> Result:
    scores = [s / max(n, 1) for s, n in zip(lp_sum, n_tok)] if by == "mean" else list(lp_sum)
    return Result(scores=scores, probs=softmax(scores), logprob_sum=lp_sum, n_tokens=n_tok)


def _cache_rows(cache, snapshot, rows: torch.Tensor) -> None:
    """Point every cache layer at the given prompt rows (repeats allowed) of the snapshot; the
    snapshot's tensors are never modified, so each group of option rows starts from the prompt."""
    for layer, (keys, values, seen) in zip(cache.layers, snapshot):
        layer.keys, layer.values = keys[rows], values[rows]
        if seen is not None:
            layer.cumulative_length = seen


def option_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Option rows grouped by length, longest first: a group holds rows at least 3/4 as long as its
    first and at most `budget` padded tokens, so padding stays small. Rows of length 0 need no pass."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        if g and 4 * lengths[i] >= 3 * lengths[g[0]] and (len(g) + 1) * lengths[g[0]] <= budget:
            g.append(i)
        else:
            groups.append([i])
    return groups


def packed_length(r: Request) -> int:
    """Positions of a cloze request packed into one row: the prompt, then its option tree's nodes."""
    return len(r.prompt_ids) + len(option_tree(r.option_ids).tokens)


def cloze_causal(model, requests: list[Request], pad_id: int, by: str, budget: int = 4096) -> list[Result]:
    """Cloze scores of causal prompts: packed into one forward pass per batch where the model takes a
    custom attention mask (checked once per model against the cached path), else through the prompt's
    shared KV cache."""
    fn = _cloze_packed if packing_works(model, requests, pad_id) else functools.partial(_cloze_cached, budget=budget)
    return [cloze_result(s, [len(o) for o in r.option_ids], by) for r, s in zip(requests, fn(model, requests, pad_id))]


def _option_logprobs(model, requests: list[Request], hidden: torch.Tensor, rows: list[list[tuple[int, int]]],
                     targets: list[list[int]]) -> list[list[float]]:
    """Each option's summed log-probability. hidden: the states that predict option tokens, one per
    output row; rows[i]: the (request, option) pairs output row i scores; targets[i]: their tokens."""
    width = max(len(r.option_ids) for r in requests)
    tgt = torch.tensor([t + t[-1:] * (width - len(t)) for t in targets], device=hidden.device)  # short rows repeat
    picked, logz = head_logits(model, hidden, tgt)
    lp = (picked - logz.unsqueeze(1)).tolist()
    sums = [[0.0] * len(r.option_ids) for r in requests]
    for row, pairs in zip(lp, rows):
        for slot, (k, j) in enumerate(pairs):
            sums[k][j] += row[slot]
    return sums


@torch.inference_mode()
def _cloze_packed(model, requests: list[Request], pad_id: int) -> list[list[float]]:
    """One forward pass: each row holds its prompt, then its option tree's nodes (option_tree) at the
    positions they would have after the prompt; the attention mask lets a node see the prompt, itself and
    the nodes before it in its options. Rows are right-padded; padding sees only the prompt and no real
    position sees padding."""
    dev = model.device
    trees = [option_tree(r.option_ids) for r in requests]
    n, width = len(requests), max(len(r.prompt_ids) + len(t.tokens) for r, t in zip(requests, trees))
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    allowed = torch.zeros((n, width, width), dtype=torch.bool)  # query position x key position
    causal = torch.ones((width, width), dtype=torch.bool).tril_()
    out_rows: list[list[tuple[int, int]]] = []
    targets: list[list[int]] = []
    at: list[tuple[int, int]] = []  # (row, column) of each state that predicts option tokens
    for k, (r, t) in enumerate(zip(requests, trees)):
        p, m = len(r.prompt_ids), len(t.tokens)
        ids[k, :p], pos[k, :p] = torch.tensor(r.prompt_ids), torch.arange(p)
        allowed[k, :p, :p] = causal[:p, :p]
        allowed[k, p:, :p] = True  # option nodes and padding see the whole prompt
        at.append((k, p - 1))
        out_rows.append([(k, j) for j in range(len(r.option_ids))])
        targets.append([o[0] for o in r.option_ids])
        if not m:
            continue
        ids[k, p : p + m], pos[k, p : p + m] = torch.tensor(t.tokens), p + torch.tensor(t.depth)
        tree = allowed[k, p : p + m, p : p + m]  # a node sees itself and its ancestors
        for i, up in enumerate(t.parent):
            if up >= 0:
                tree[i] = tree[up]
            tree[i, i] = True
            at.append((k, p + i))
            out_rows.append([(k, j) for j in t.through[i]])
            targets.append([r.option_ids[j][t.depth[i] + 1] for j in t.through[i]])
    ids, pos, allowed = ids.to(dev), pos.to(dev), allowed.to(dev)
    mask = _packed_masks(model, allowed, pos)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    where = torch.tensor(at, device=dev)
    return _option_logprobs(model, requests, hidden[where[:, 0], where[:, 1]], out_rows, targets)


def _attention_kinds(model) -> Optional[set]:
    """The attention kinds of a model's layers ('full_attention', 'sliding_attention'), or None where the
    model's attention cannot take a custom 4-D mask (flash attention, chunked or linear attention)."""
    cfg = text_config(model)
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager") or cfg.is_encoder_decoder:
        return None
    kinds = set(getattr(cfg, "layer_types", None) or ())
    if not kinds:
        kinds = {"sliding_attention" if getattr(cfg, "sliding_window", None) else "full_attention"}
    return kinds if kinds <= {"full_attention", "sliding_attention"} else None


def _packed_masks(model, full: torch.Tensor, pos: torch.Tensor):
    """The packed rows' 4-D attention mask (rows x 1 x width x width) from the positions each query may see
    (`full`, rows x width x width), or one per attention kind (a dict, as models with both full and
    sliding-window layers take it; sliding layers also drop keys `sliding_window` or more positions
    back): bool for sdpa, additive for eager."""
    cfg = text_config(model)
    kinds = _attention_kinds(model)
    window = getattr(cfg, "sliding_window", None)
    masks = {"full_attention": full, "sliding_attention": full}
    if "sliding_attention" in kinds and window and int(pos.max()) >= window:
        masks["sliding_attention"] = full & (pos[:, :, None] - pos[:, None, :] < window)
    if cfg._attn_implementation == "eager":
        dtype = model.dtype
        masks = {name: torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(~m, torch.finfo(dtype).min)
                 for name, m in masks.items()}
    masks = {name: m[:, None] for name, m in masks.items()}
    return masks if len(kinds) > 1 else masks[kinds.pop()]


def packing_works(model, requests: list[Request], pad_id: int) -> bool:
    """Whether cloze rows can be packed for this model: its attention takes a custom mask, and packed
    scores of two requests equal the cached path's (checked once per model; a model or transformers
    version that ignores the mask falls back to the cached path with a warning)."""
    ok = getattr(model, "_persona_bench_packs", None)
    if ok is None:
        sample = [r for r in requests if r.option_ids][:2]
        if not sample:
            return False
        ok = _attention_kinds(model) is not None
        if ok:
            try:
                got = _cloze_packed(model, sample, pad_id)
                want = _cloze_cached(model, sample, pad_id)
                atol, rtol = (1e-3, 1e-4) if model.dtype == torch.float32 else (0.25, 0.02)
                ok = all(abs(a - b) <= atol + rtol * abs(b) for g, w in zip(got, want) for a, b in zip(g, w))
                why = "" if ok else f"packed scores {got} differ from the cached path's {want}"
            except Exception as e:  # a model whose forward rejects the mask
                ok, why = False, f"{type(e).__name__}: {e}"
            if not ok:
                log.warning("cloze rows cannot be packed for %s (%s); scoring through the shared prompt cache",
                            type(model).__name__, why)
        model._persona_bench_packs = ok
    return ok


@torch.inference_mode()
def _cloze_cached(model, requests: list[Request], pad_id: int, budget: int = 4096) -> list[list[float]]:
    """The prompts in one pass; its KV cache is then shared by the option rows, regrouped by length."""
    dev = model.device
    ids, mask, pos = left_pad([r.prompt_ids for r in requests], pad_id, dev)
    out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    pairs = [(k, j) for k, r in enumerate(requests) for j in range(len(r.option_ids))]
    # Hidden states that predict option tokens, gathered for one pass through the output layer: the
    # prompt's last position predicts every option's first token (one row per prompt) ...
    hidden = [out.last_hidden_state[:, -1]]
    out_rows = [[(k, j) for j in range(len(r.option_ids))] for k, r in enumerate(requests)]
    targets = [[o[0] for o in r.option_ids] for r in requests]
    # ... the rest continue from the prompt's cache, in groups of option rows of similar length.
    cache = kv_cache_of(out)
    snapshot = [(layer.keys, layer.values, getattr(layer, "cumulative_length", None)) for layer in cache.layers]
    rest = [requests[k].option_ids[j][:-1] for k, j in pairs]  # inputs whose successors are scored
    real = mask.sum(-1)
    for group in option_groups([len(x) for x in rest], budget):
        prompt_rows = torch.tensor([pairs[g][0] for g in group], device=dev)
        _cache_rows(cache, snapshot, prompt_rows)
        cids, cmask = right_pad([rest[g] for g in group], pad_id, dev)
        cpos = real[prompt_rows].unsqueeze(1) + torch.arange(cids.shape[1], device=dev).unsqueeze(0)
        full_mask = torch.cat([mask[prompt_rows], cmask], dim=1)
        h = model.base_model(input_ids=cids, attention_mask=full_mask, position_ids=cpos, use_cache=True,
                             **{cache_keyword(type(model.base_model)): cache}).last_hidden_state
        rows, cols = cmask.nonzero(as_tuple=True)  # only real positions reach the output layer
        hidden.append(h[rows, cols])
        for r, c in zip(rows.tolist(), cols.tolist()):
            k, j = pairs[group[r]]
            out_rows.append([(k, j)])
            targets.append([requests[k].option_ids[j][c + 1]])
    return _option_logprobs(model, requests, torch.cat(hidden), out_rows, targets)


@torch.inference_mode()
def cloze_seq2seq(model, requests: list[Request], pad_id: int, by: str) -> list[Result]:
    dev = model.device
    n_opt = max(len(r.option_ids) for r in requests)
    ids, mask = right_pad([r.prompt_ids for r in requests], pad_id, dev)
    enc = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state  # encoded once per prompt
    opts = [r.option_ids[j] if j < len(r.option_ids) else [] for r in requests for j in range(n_opt)]
    start = model.config.decoder_start_token_id
    dec, dmask = right_pad([[start] + o[:-1] if o else [] for o in opts], pad_id, dev)
    tgt, _ = right_pad(opts, pad_id, dev, width=dec.shape[1])
    logits = model(
        encoder_outputs=(enc.repeat_interleave(n_opt, dim=0),),
        attention_mask=mask.repeat_interleave(n_opt, dim=0),
        decoder_input_ids=dec,
        decoder_attention_mask=dmask,
        use_cache=False,
    ).logits.float()
    tok_lp = torch.log_softmax(logits, dim=-1).gather(2, tgt.unsqueeze(2)).squeeze(2) * dmask
    sums = tok_lp.sum(-1).tolist()
    return [
        cloze_result([sums[k * n_opt + j] for j in range(len(r.option_ids))], [len(o) for o in r.option_ids], by)
        for k, r in enumerate(requests)
    ]
