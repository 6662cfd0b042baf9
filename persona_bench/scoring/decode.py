"""The greedy decoding loop of scoring=generate and the self-pick: the tokens transformers' own loop
(`model.generate`, greedy, the same logits processor) would write, with less work.

    new = decode(model, tokenizer, requests, arch, pad_id, max_new, eos, processor, stop)

Six things make it faster than `model.generate(max_new_tokens=32)` on the same batch; each keeps
every row's tokens as they were, up to the token after which the parser reads nothing:

  last_position_head  the prompt pass sends only the last position through the output layer
                      (`logits_to_keep=1`; the embedded model's 262,144-token head would
                      otherwise cost as much as the whole body on every prompt token)
  chunked_prompt_pass the prompt pass runs over groups of rows of at most `prompt_tokens`
                      padded tokens each (the scoring budget; a generation batch holds 4x
                      that), at the batch's full width, and their caches are joined: the same
                      rows' computations in passes that stay in the CPU's cache (1.25x on the
                      prompt pass of the embedded model, bit-identical logits)
  stop_strings        a row ends once its text holds what the parser cuts at (a new
                      "Question:", "Options:", "Roles:", ...: scoring.parse.read_to_end)
                      or an end-of-sequence token; transformers' loop writes 32 tokens
  settled_answers     ... or once its first line is complete and decides the answer by
                      itself (scoring.parse.settled: " 2. Paris\nExplanation" is settled at
                      the "E"); off: at a cut only
  rows_leave          a finished row leaves the batch: its key/value cache rows (and, for
                      seq2seq, its encoder states) are selected out (`Cache.batch_select_indices`),
                      so every later step computes only unfinished rows and the cache stays
                      as small as they are. Off: finished rows are fed padding until every
                      row has finished (what transformers does)
  The loop itself     no per-step `prepare_inputs_for_generation`, stopping criteria or
                      mask re-derivation beyond the model's own

`Speedups` switches each off for benchmarks/generation.py's ablations; runs use all of them.
Rows are independent in every step (their own attention mask and positions), so leaving the
batch changes no other row's computation; in reduced precision the matrix kernels may still
round a row differently at another batch size (as batch composition already did), which the
identity checks measure (tests/test_generate.py, benchmarks/generation.py).

`processor(ids, logits, rows)` is scoring.generate.Decoder: it sees, like transformers' logits
processors, the sequences so far (prompt and answer; seq2seq: the decoder's) and the step's float32
logits of the rows still in the batch, `rows` naming each one's index in `requests`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from persona_bench.scoring.logits import left_pad, right_pad
from persona_bench.scoring.requests import Request


@dataclass(frozen=True)
class Speedups:
    """Which of the loop's savings are on (all in a run; benchmarks/generation.py turns each off)."""

    last_position_head: bool = True
    chunked_prompt_pass: bool = True
    stop_strings: bool = True
    settled_answers: bool = True
    rows_leave: bool = True


FAST = Speedups()


def _cache(model, arch: str):
    from transformers import DynamicCache, EncoderDecoderCache

    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    if arch == "seq2seq":
        return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    return DynamicCache(config=config)


def _join(caches: list) -> object:
    """One cache holding the rows of `caches` (causal, the same width each) in order."""
    first = caches[0]
    for i, layer in enumerate(first.layers):
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = torch.cat([c.layers[i].keys for c in caches], dim=0)
            layer.values = torch.cat([c.layers[i].values for c in caches], dim=0)
    return first


def _prompt_pass(model, ids, mask, pos, arch: str, prompt_tokens: int, speed: Speedups):
    """The causal prompt pass: float32 logits at the last position and the cache, in row groups of at most
    `prompt_tokens` padded tokens when speed.chunked_prompt_pass."""
    keep = {"logits_to_keep": 1} if speed.last_position_head else {}
    rows = ids.shape[0]
    step = max(1, prompt_tokens // max(1, ids.shape[1])) if speed.chunked_prompt_pass and prompt_tokens else rows
    caches, logits = [], []
    for a in range(0, rows, step):
        cache = _cache(model, arch)
        out = model(input_ids=ids[a:a + step], attention_mask=mask[a:a + step], position_ids=pos[a:a + step],
                    cache=cache, use_cache=True, **keep)
        logits.append(out.logits[:, -1, :].to(copy=True, dtype=torch.float32))
        caches.append(cache)
        del out
    return (logits[0] if len(logits) == 1 else torch.cat(logits)), (caches[0] if len(caches) == 1 else _join(caches))


@torch.inference_mode()
def decode(model, tokenizer, requests: list[Request], arch: str, pad_id: int, max_new: int, eos: list[int],
           processor: Callable, stop: Optional[Callable[[int, str], bool]] = None,
           speed: Speedups = FAST, prompt_tokens: int = 0) -> list[list[int]]:
    """Each request's new tokens, up to and including the end-of-sequence token or the token after which
    `stop(request index, text so far)` is true, at most `max_new`. `prompt_tokens`: the most padded tokens
    of one prompt pass (0: the whole batch in one)."""
    dev = model.device
    n = len(requests)
    seqs = [r.prompt_ids for r in requests]
    if arch == "seq2seq":
        cache = _cache(model, arch)
        ids, mask = right_pad(seqs, pad_id, dev)
        encoder = model.get_encoder()(input_ids=ids, attention_mask=mask)
        seen = torch.full((n, 1), model.config.decoder_start_token_id, dtype=torch.long, device=dev)
        out = model(encoder_outputs=encoder, attention_mask=mask, decoder_input_ids=seen, cache=cache, use_cache=True)
        logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)
        del out
    else:
        ids, mask, pos = left_pad(seqs, pad_id, dev)
        seen = ids
        logits, cache = _prompt_pass(model, ids, mask, pos, arch, prompt_tokens, speed)
        pos = pos[:, -1:]
    rows = list(range(n))  # request index of each row of the batch
    new: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    eos_set = set(eos)
    for step in range(max_new):
        scores = processor(seen, logits, rows)
        token = scores.argmax(-1)
        finished = []
        for i, (r, t) in enumerate(zip(rows, token.tolist())):
            if done[r]:
                continue
            new[r].append(t)
            if t in eos_set or (speed.stop_strings and stop is not None
                                and stop(r, tokenizer.decode(new[r], skip_special_tokens=True))):
                done[r] = True
                finished.append(i)
        if all(done) or step == max_new - 1:
            break
        live = torch.tensor([not done[r] for r in rows], device=dev)
        if speed.rows_leave and finished:
            idx = live.nonzero().squeeze(1)
            cache.batch_select_indices(idx)
            rows = [rows[i] for i in idx.tolist()]
            token, seen, mask = token[idx], seen[idx], mask[idx]
            if arch == "seq2seq":
                encoder.last_hidden_state = encoder.last_hidden_state[idx]
            else:
                pos = pos[idx]
        else:
            token = torch.where(live, token, torch.full_like(token, pad_id))  # finished rows get padding, as in HF
        step_ids = token[:, None]
        seen = torch.cat([seen, step_ids], dim=-1)
        if arch == "seq2seq":
            out = model(encoder_outputs=encoder, attention_mask=mask, decoder_input_ids=step_ids, cache=cache,
                        use_cache=True)
        else:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            pos = pos + 1
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)
        del out
    return new
