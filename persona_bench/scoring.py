"""Scoring answers from logits: `letter` and `cloze`, for causal and seq2seq models.

letter  one forward pass per prompt; the answer-label tokens' logits at the answer
        position (the last prompt position of a causal model, computed only there;
        the first decoder step of a seq2seq model). Saves the softmax over the
        labels and the full-vocabulary probability mass the labels take.
cloze   each option's text as the continuation of the prompt; its log-likelihood
        summed and per token. The prompt is encoded once. Causal models: one pass
        per batch, each row holding its prompt and then every option at the
        positions it would have after the prompt, a 4-D attention mask keeping the
        options apart (where the model takes one; else the prompt's KV cache is
        shared by the options' rows). Seq2seq: the encoder output is shared.

Every function takes one batch of requests and returns one result per request, in
order. Padding never changes a result: causal prompts are left-padded with explicit
position ids; continuations and packed rows are right-padded and masked.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Optional

import torch

from .prompts import continuation

log = logging.getLogger(__name__)


@dataclass
class Request:
    prompt_ids: list[int]
    label_ids: list[int] = field(default_factory=list)  # letter: one token per label
    option_ids: list[list[int]] = field(default_factory=list)  # cloze: tokens of each option's continuation
    seed: Optional[int] = None  # generate (sampled): this prompt's generator seed (generate.prompt_seed)
    label_prefix: list[int] = field(default_factory=list)  # generate: tokens every label starts with (LabelResolver.split)

    @property
    def cost(self) -> int:
        """Tokens this request adds to a batch's forward passes (for the token budget)."""
        return len(self.prompt_ids) + sum(len(o) for o in self.option_ids)


@dataclass
class Result:
    scores: list[float]  # letter: label logits; cloze: the deciding log-likelihood per option
    probs: list[float]  # softmax over `scores`
    label_mass: Optional[float] = None  # letter: full-vocabulary probability on the labels
    logprob_sum: Optional[list[float]] = None  # cloze
    n_tokens: Optional[list[int]] = None  # cloze
    generation: Optional[str] = None  # generate: the generated text
    n_new_tokens: Optional[int] = None  # generate: tokens generated

    @property
    def pred(self) -> int:
        """The highest-scoring option (generate: the labels' logit answer); -1 with no scores."""
        return max(range(len(self.scores)), key=lambda i: (self.scores[i], -i)) if self.scores else -1


class TokenizationError(ValueError):
    pass


# --------------------------------------------------------------------------- tokenization
def encode(tokenizer, text: str, add_special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def suffix_ids(tokenizer, prompt: str, prompt_ids: list[int], suffix: str, add_special: bool) -> list[int]:
    """The tokens `suffix` adds after `prompt`, as the tokenizer splits prompt+suffix.

    Falls back to encoding the suffix alone when the joint encoding changes the
    prompt's own tokens (a merge across the boundary)."""
    return _split_suffix(tokenizer, prompt_ids, encode(tokenizer, prompt + suffix, add_special), suffix, add_special)


def suffix_ids_many(tokenizer, prompts: list[str], prompt_ids: list[list[int]], suffixes: list[str],
                    add_special: list[bool]) -> list[list[int]]:
    """`suffix_ids` of many (prompt, suffix) pairs, with one batched tokenizer call per special-token
    mode instead of one call per pair (the calls took 84% of building a cloze grid)."""
    out: list = [None] * len(prompts)
    for mode in (True, False):
        idx = [i for i, s in enumerate(add_special) if s is mode]
        if idx:
            wholes = tokenizer([prompts[i] + suffixes[i] for i in idx], add_special_tokens=mode)["input_ids"]
            for i, whole in zip(idx, wholes):
                out[i] = _split_suffix(tokenizer, prompt_ids[i], whole, suffixes[i], mode)
    return out


def _split_suffix(tokenizer, prompt_ids: list[int], whole: list[int], suffix: str, add_special: bool) -> list[int]:
    n = len(prompt_ids)
    if tokenizer.eos_token_id is not None and add_special and prompt_ids and prompt_ids[-1] == tokenizer.eos_token_id:
        n -= 1  # tokenizers that append EOS (T5): compare without it
        whole = whole[:-1]
    if whole[:n] == prompt_ids[:n] and len(whole) > n:
        return whole[n:]
    return encode(tokenizer, suffix, False)


class LabelResolver:
    """Answer-label token ids per tokenizer, with or without a leading space as the model
    would emit them after the prompt; checked to be single tokens."""

    def __init__(self, tokenizer, arch: str):
        self.tokenizer, self.arch = tokenizer, arch
        self._cache: dict = {}

    def __call__(self, prompt: str, prompt_ids: list[int], labels: tuple[str, ...], add_special: bool) -> list[int]:
        key = (prompt[-24:], labels, add_special)
        if key not in self._cache:
            ids = []
            for label in labels:
                if self.arch == "seq2seq":  # the decoder's first token
                    toks = encode(self.tokenizer, label, False)
                    shown = label
                else:
                    shown = continuation(prompt, label)
                    toks = suffix_ids(self.tokenizer, prompt, prompt_ids, shown, add_special)
                if len(toks) != 1:
                    raise TokenizationError(
                        f"answer label {shown!r} is {len(toks)} tokens {toks} for this tokenizer; letter scoring needs "
                        "single-token labels: use scoring=cloze or another scoring.format"
                    )
                ids.append(toks[0])
            if len(set(ids)) != len(ids):
                raise TokenizationError(f"answer labels {labels} map to repeated token ids {ids}")
            self._cache[key] = ids
        return self._cache[key]

    def split(self, prompt: str, prompt_ids: list[int], labels: tuple[str, ...], add_special: bool) -> tuple[list[int], list[int]]:
        """(prefix, label ids): single-token labels have no prefix; labels that are one shared prefix plus
        one distinct token each (Gemma writes " 1" as a space token, then "1") get that prefix, so their
        logits can be read one position later, after the prompt and the prefix. Else TokenizationError."""
        try:
            return [], self(prompt, prompt_ids, labels, add_special)
        except TokenizationError:
            if self.arch == "seq2seq":
                raise
        toks = [suffix_ids(self.tokenizer, prompt, prompt_ids, continuation(prompt, lab), add_special) for lab in labels]
        prefix = toks[0][:-1]
        last = [t[-1] for t in toks if t]
        if not prefix or any(t[:-1] != prefix for t in toks) or len(set(last)) != len(toks):
            raise TokenizationError(f"answer labels {labels} are the tokens {toks} for this tokenizer: neither single "
                                    "tokens nor one shared prefix plus one distinct token each")
        return prefix, last


# --------------------------------------------------------------------------- tensors
def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, position_ids for left-padded causal prompts."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _right_pad(seqs: list[list[int]], pad_id: int, device, width: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _softcap(model, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _head(model, hidden: torch.Tensor, ids: torch.Tensor, block: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Output-layer logits at `ids` (rows x k) and the log-normaliser (rows), float32.

    The vocabulary is processed in blocks with a running log-sum-exp, so the full
    (vocabulary x rows) logit matrix never exists: for Gemma's 262,144-token head it
    would be 1 MB per row, and writing and re-reading it cost more than the matmul.
    Blocks of 4,096 vocabulary rows times a contiguous hidden.T ran at the CPU's full
    matmul rate (0.146 TFLOP/s, against 0.08 for hidden @ weight.T in one piece)."""
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if not (isinstance(head, torch.nn.Linear) and head.bias is None and weight is not None and weight.dtype == hidden.dtype):
        logits = _softcap(model, head(hidden).float())  # quantised or biased heads: the module's own forward
        return logits.gather(1, ids), torch.logsumexp(logits, dim=-1)
    picked = _softcap(model, torch.einsum("nh,nkh->nk", hidden, weight[ids]).float())
    n = hidden.shape[0]
    hidden_t = hidden.T.contiguous()
    run_max = torch.full((n,), float("-inf"), device=hidden.device)
    run_sum = torch.zeros(n, device=hidden.device)
    for start in range(0, weight.shape[0], block):
        blk = _softcap(model, (weight[start : start + block] @ hidden_t).float())  # (block, rows)
        new_max = torch.maximum(run_max, blk.amax(0))
        run_sum = run_sum * torch.exp(run_max - new_max) + blk.sub_(new_max).exp_().sum(0)
        run_max = new_max
    return picked, run_max + torch.log(run_sum)


def _softmax(xs: list[float]) -> list[float]:
    return torch.softmax(torch.tensor(xs, dtype=torch.float64), 0).tolist()


def _letter_results(picked: torch.Tensor, logz: torch.Tensor, requests: list[Request]) -> list[Result]:
    """Each row's label logits (its first len(label_ids) columns) and the labels' share of the vocabulary."""
    out = []
    for i, r in enumerate(requests):
        lab = picked[i, : len(r.label_ids)]
        mass = torch.exp(torch.logsumexp(lab, 0) - logz[i]).item()
        scores = lab.tolist()
        out.append(Result(scores=scores, probs=_softmax(scores), label_mass=mass))
    return out


def _cloze_result(lp_sum: list[float], n_tok: list[int], by: str) -> Result:
    scores = [s / max(n, 1) for s, n in zip(lp_sum, n_tok)] if by == "mean" else list(lp_sum)
    return Result(scores=scores, probs=_softmax(scores), logprob_sum=lp_sum, n_tokens=n_tok)


# --------------------------------------------------------------------------- causal
@torch.inference_mode()
def letter_causal(model, requests: list[Request], pad_id: int) -> list[Result]:
    ids, mask, pos = _left_pad([r.prompt_ids for r in requests], pad_id, model.device)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    return _letter_results(*_head(model, hidden[:, -1], _label_matrix(requests, hidden.device)), requests)


def _label_matrix(requests: list[Request], device) -> torch.Tensor:
    """Label ids as a (rows x most labels) matrix; short rows repeat their last label (ignored)."""
    width = max(len(r.label_ids) for r in requests)
    return torch.tensor([r.label_ids + r.label_ids[-1:] * (width - len(r.label_ids)) for r in requests], device=device)


def _cache_rows(cache, snapshot, rows: torch.Tensor) -> None:
    """Point every cache layer at the given prompt rows (repeats allowed) of the snapshot; the
    snapshot's tensors are never modified, so each group of option rows starts from the prompt."""
    for layer, (keys, values, seen) in zip(cache.layers, snapshot):
        layer.keys, layer.values = keys[rows], values[rows]
        if seen is not None:
            layer.cumulative_length = seen


def _cache_of(out):
    """The KV cache a forward pass returned: `cache` since transformers 5.2x, `past_key_values` before
    (vLLM 0.33's environment pins transformers 5.19, requirements-vllm.txt)."""
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


@functools.lru_cache(maxsize=None)
def _cache_keyword(cls) -> str:
    """The forward keyword of a model class that takes a KV cache in this transformers version."""
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


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
    """Positions of a cloze request packed into one row: the prompt, then each option's tokens but its last
    (the prompt's last position predicts an option's first token; each option token predicts the next)."""
    return len(r.prompt_ids) + sum(max(len(o) - 1, 0) for o in r.option_ids)


def cloze_causal(model, requests: list[Request], pad_id: int, by: str, budget: int = 4096) -> list[Result]:
    """Cloze scores of causal prompts: packed into one forward pass per batch where the model takes a
    custom attention mask (checked once per model against the cached path), else through the prompt's
    shared KV cache."""
    fn = _cloze_packed if packing_works(model, requests, pad_id) else functools.partial(_cloze_cached, budget=budget)
    return [_cloze_result(s, [len(o) for o in r.option_ids], by) for r, s in zip(requests, fn(model, requests, pad_id))]


def _option_logprobs(model, requests: list[Request], hidden: torch.Tensor, rows: list[list[tuple[int, int]]],
                     targets: list[list[int]]) -> list[list[float]]:
    """Each option's summed log-probability. hidden: the states that predict option tokens, one per
    output row; rows[i]: the (request, option) pairs output row i scores; targets[i]: their tokens."""
    width = max(len(r.option_ids) for r in requests)
    tgt = torch.tensor([t + t[-1:] * (width - len(t)) for t in targets], device=hidden.device)  # short rows repeat
    picked, logz = _head(model, hidden, tgt)
    lp = (picked - logz.unsqueeze(1)).tolist()
    sums = [[0.0] * len(r.option_ids) for r in requests]
    for row, pairs in zip(lp, rows):
        for slot, (k, j) in enumerate(pairs):
            sums[k][j] += row[slot]
    return sums


@torch.inference_mode()
def _cloze_packed(model, requests: list[Request], pad_id: int) -> list[list[float]]:
    """One forward pass: each row holds its prompt, then every option's tokens (but the last) at the
    positions they would have after the prompt; the attention mask lets an option's tokens see the prompt
    and their own option only. Rows are right-padded; padding is masked out of every real position."""
    dev = model.device
    n, width = len(requests), max(packed_length(r) for r in requests)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    seg = torch.full((n, width), -1, dtype=torch.long)  # 0: prompt; j + 1: option j; -1: padding
    out_rows: list[list[tuple[int, int]]] = []
    targets: list[list[int]] = []
    at: list[tuple[int, int]] = []  # (row, column) of each state that predicts option tokens
    for k, r in enumerate(requests):
        p = len(r.prompt_ids)
        ids[k, :p], pos[k, :p], seg[k, :p] = torch.tensor(r.prompt_ids), torch.arange(p), 0
        at.append((k, p - 1))
        out_rows.append([(k, j) for j in range(len(r.option_ids))])
        targets.append([o[0] for o in r.option_ids])
        col = p
        for j, o in enumerate(r.option_ids):
            m = len(o) - 1
            if m > 0:
                ids[k, col : col + m], pos[k, col : col + m], seg[k, col : col + m] = torch.tensor(o[:-1]), torch.arange(p, p + m), j + 1
            for c in range(m):
                at.append((k, col + c))
                out_rows.append([(k, j)])
                targets.append([o[c + 1]])
            col += m
    ids, pos, seg = ids.to(dev), pos.to(dev), seg.to(dev)
    mask = _packed_masks(model, seg, pos)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    where = torch.tensor(at, device=dev)
    return _option_logprobs(model, requests, hidden[where[:, 0], where[:, 1]], out_rows, targets)


def _text_config(model):
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def _attention_kinds(model) -> Optional[set]:
    """The attention kinds of a model's layers ('full_attention', 'sliding_attention'), or None where the
    model's attention cannot take a custom 4-D mask (flash attention, chunked or linear attention)."""
    cfg = _text_config(model)
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager") or cfg.is_encoder_decoder:
        return None
    kinds = set(getattr(cfg, "layer_types", None) or ())
    if not kinds:
        kinds = {"sliding_attention" if getattr(cfg, "sliding_window", None) else "full_attention"}
    return kinds if kinds <= {"full_attention", "sliding_attention"} else None


def _packed_masks(model, seg: torch.Tensor, pos: torch.Tensor):
    """The packed rows' 4-D attention mask (rows x 1 x width x width), or one per attention kind (a dict,
    as models with both full and sliding-window layers take it): bool for sdpa, additive for eager."""
    cfg = _text_config(model)
    idx = torch.arange(seg.shape[1], device=seg.device)
    q, k = seg[:, :, None], seg[:, None, :]
    full = (idx[:, None] >= idx[None, :]) & (k >= 0) & ((k == 0) | (k == q))
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
    ids, mask, pos = _left_pad([r.prompt_ids for r in requests], pad_id, dev)
    out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    pairs = [(k, j) for k, r in enumerate(requests) for j in range(len(r.option_ids))]
    # Hidden states that predict option tokens, gathered for one pass through the output layer: the
    # prompt's last position predicts every option's first token (one row per prompt) ...
    hidden = [out.last_hidden_state[:, -1]]
    out_rows = [[(k, j) for j in range(len(r.option_ids))] for k, r in enumerate(requests)]
    targets = [[o[0] for o in r.option_ids] for r in requests]
    # ... the rest continue from the prompt's cache, in groups of option rows of similar length.
    cache = _cache_of(out)
    snapshot = [(l.keys, l.values, getattr(l, "cumulative_length", None)) for l in cache.layers]
    rest = [requests[k].option_ids[j][:-1] for k, j in pairs]  # inputs whose successors are scored
    real = mask.sum(-1)
    for group in option_groups([len(x) for x in rest], budget):
        prompt_rows = torch.tensor([pairs[g][0] for g in group], device=dev)
        _cache_rows(cache, snapshot, prompt_rows)
        cids, cmask = _right_pad([rest[g] for g in group], pad_id, dev)
        cpos = real[prompt_rows].unsqueeze(1) + torch.arange(cids.shape[1], device=dev).unsqueeze(0)
        full_mask = torch.cat([mask[prompt_rows], cmask], dim=1)
        h = model.base_model(input_ids=cids, attention_mask=full_mask, position_ids=cpos, use_cache=True,
                             **{_cache_keyword(type(model.base_model)): cache}).last_hidden_state
        rows, cols = cmask.nonzero(as_tuple=True)  # only real positions reach the output layer
        hidden.append(h[rows, cols])
        for r, c in zip(rows.tolist(), cols.tolist()):
            k, j = pairs[group[r]]
            out_rows.append([(k, j)])
            targets.append([requests[k].option_ids[j][c + 1]])
    return _option_logprobs(model, requests, torch.cat(hidden), out_rows, targets)


# --------------------------------------------------------------------------- seq2seq
@torch.inference_mode()
def letter_seq2seq(model, requests: list[Request], pad_id: int) -> list[Result]:
    ids, mask = _right_pad([r.prompt_ids for r in requests], pad_id, model.device)
    start = torch.full((len(requests), 1), model.config.decoder_start_token_id, dtype=torch.long, device=model.device)
    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=start, use_cache=False).logits[:, 0].float()
    return _letter_results(logits.gather(1, _label_matrix(requests, logits.device)), torch.logsumexp(logits, -1), requests)


@torch.inference_mode()
def cloze_seq2seq(model, requests: list[Request], pad_id: int, by: str) -> list[Result]:
    dev = model.device
    n_opt = max(len(r.option_ids) for r in requests)
    ids, mask = _right_pad([r.prompt_ids for r in requests], pad_id, dev)
    enc = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state  # encoded once per prompt
    opts = [r.option_ids[j] if j < len(r.option_ids) else [] for r in requests for j in range(n_opt)]
    start = model.config.decoder_start_token_id
    dec, dmask = _right_pad([[start] + o[:-1] if o else [] for o in opts], pad_id, dev)
    tgt, _ = _right_pad(opts, pad_id, dev, width=dec.shape[1])
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
        _cloze_result([sums[k * n_opt + j] for j in range(len(r.option_ids))], [len(o) for o in r.option_ids], by)
        for k, r in enumerate(requests)
    ]


def score_batch(model, requests: list[Request], arch: str, method: str, pad_id: int, cloze_by: str = "mean",
                budget: int = 4096) -> list[Result]:
    """One batch of requests -> one Result each, in order."""
    if method == "letter":
        return (letter_seq2seq if arch == "seq2seq" else letter_causal)(model, requests, pad_id)
    if arch == "seq2seq":
        return cloze_seq2seq(model, requests, pad_id, cloze_by)
    return cloze_causal(model, requests, pad_id, cloze_by, budget)
