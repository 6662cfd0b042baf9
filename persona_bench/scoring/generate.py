"""Generation scoring: the model writes an answer after the prompt; parse.py reads the option.

    scoring.method=generate   scoring.generate.{decoding, max_new_tokens, temperature, top_p, top_k,
                              repetition_penalty, seed, backend}

One batch of requests -> one Result each, in order, like scoring.score_batch: `generation` holds
the text (special tokens removed), `n_new_tokens` its length, and `scores` the answer labels'
logits at the first generated position (what letter scoring says on the same prompt), so every
generated answer comes with its logit answer for free. Labels that are a shared prefix plus one token
(Gemma: a space, then the digit) are read after the prompt and the prefix: at that step of the
generation when the model wrote the prefix itself (exact: the same position), else with one more
prompt pass (scoring.letter_causal); labels that are neither give no scores.

The loop is `decode` below (the prompt pass's output layer at the last position only, the prompt pass
in row groups, each row stopping at its end-of-sequence token or once parse.settled says its parsed
answer cannot change, finished rows leaving the batch); `generate_batch_hf` is transformers' own
`model.generate` with the same processor, the reference it is tested and measured against
(benchmarks/generation.py). Decoding is greedy or sampled. Sampling is done by one logits processor
(`Decoder`) inside the greedy loop: every prompt draws from its own torch.Generator seeded by (seed,
prompt hash), so its answer does not depend on which prompts share its batch, on the batch size or
on resumption. The same processor applies the repetition penalty (HF's and vLLM's definition:
a seen token's logit is divided by the penalty when positive, multiplied when negative; seen =
the prompt's real tokens and the answer so far, padding excluded), temperature, top-k and top-p.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from persona_bench.scoring.letter import letter_causal
from persona_bench.scoring.logits import left_pad, right_pad
from persona_bench.scoring.parse import read_to_end, settled
from persona_bench.scoring.requests import Request, Result, softmax

# Decoding reads every weight once per step however many rows the batch has, so a step costs nearly
# the same for 28 rows as for 128 (0.70 and 0.68 s for the embedded model on this CPU): generation
# batches hold this many times the scoring budget of padded tokens (prompt plus new tokens per row).
BATCH_FACTOR = 4


def prompt_seed(seed: int, prompt_hash: str) -> int:
    """The generator seed of one prompt: a hash of the run's seed and the prompt's hash (63 bits)."""
    return int(hashlib.sha256(f"{seed}:{prompt_hash}".encode()).hexdigest()[:15], 16)


class Decoder:
    """A transformers LogitsProcessor that records the first step's label logits and, for sampled
    decoding, replaces the step's logits by a one-hot choice drawn from each row's own generator
    (so the surrounding greedy loop takes exactly that token)."""

    def __init__(self, settings, requests: list[Request], n_pad: list[int], device):
        self.s = settings
        self.requests = requests
        self.n_pad = n_pad  # left-padding positions of each row's input_ids (excluded from the penalty)
        self.step = 0
        self.label_step = max((len(r.label_prefix) for r in requests), default=0)  # where the labels are read
        self.first: Optional[torch.Tensor] = None  # (rows, vocab) logits of the first generated position
        self.at_labels: Optional[torch.Tensor] = None  # (rows, vocab) logits label_step positions on
        self.generators = None
        if settings.decoding == "sampled":
            self.generators = []
            for r in requests:
                g = torch.Generator(device=device)
                g.manual_seed(r.seed or 0)
                self.generators.append(g)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.process(input_ids, scores)

    def process(self, input_ids: torch.Tensor, scores: torch.Tensor, rows: Optional[list[int]] = None) -> torch.Tensor:
        """One step (transformers' processor call); `rows` (scoring.generate.decode) names each batch row's request
        once finished rows have left the batch."""
        rows = list(range(scores.shape[0])) if rows is None else rows
        if self.step == 0:
            self.first = dict(zip(rows, scores.float().clone()))
        if self.step == self.label_step:
            self.at_labels = self.first if self.step == 0 else dict(zip(rows, scores.float().clone()))
        self.step += 1
        s = self.s
        if s.repetition_penalty != 1.0:
            scores = self._penalise(input_ids, scores.clone(), rows)
        if s.decoding != "sampled":
            return scores
        logits = scores.float() / s.temperature
        if s.top_k:
            kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if s.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= s.top_p  # keep the smallest prefix reaching top_p
            logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        probs = logits.softmax(-1)
        out = torch.full_like(scores, float("-inf"))
        for i, r in enumerate(rows):
            token = torch.multinomial(probs[i], 1, generator=self.generators[r])
            out[i, token] = 0.0
        return out

    def _penalise(self, input_ids: torch.Tensor, scores: torch.Tensor, rows: Optional[list[int]] = None) -> torch.Tensor:
        for i, row in enumerate(range(input_ids.shape[0]) if rows is None else rows):
            seen = input_ids[i, self.n_pad[row]:].unique()
            vals = scores[i, seen]
            scores[i, seen] = torch.where(vals > 0, vals / self.s.repetition_penalty, vals * self.s.repetition_penalty)
        return scores


def eos_ids(model, tokenizer) -> list[int]:
    """Every end-of-sequence id the model's generation config or tokenizer names (chat models end a
    turn with their own token, e.g. Gemma's <end_of_turn>)."""
    ids = []
    for source in (getattr(model, "generation_config", None), tokenizer):
        e = getattr(source, "eos_token_id", None)
        for x in (e if isinstance(e, (list, tuple)) else [e]):
            if x is not None and int(x) not in ids:
                ids.append(int(x))
    return ids


# The decoding loop ------------------------------------------------------------------------------------------
# `decode`, the greedy loop of scoring=generate and the self-pick, writes the tokens transformers' own
# loop (`model.generate`, greedy, the same logits processor) would write, with less work. Five savings,
# each keeping every row's tokens as they were, up to the token after which the parser reads nothing:
#
#   last_position_head  the prompt pass sends only the last position through the output layer
#                       (`logits_to_keep=1`; the embedded model's 262,144-token head would
#                       otherwise cost as much as the whole body on every prompt token)
#   chunked_prompt_pass the prompt pass runs over groups of rows of at most `prompt_tokens`
#                       padded tokens each (the scoring budget; a generation batch holds 4x
#                       that), at the batch's full width, and their caches are joined: the same
#                       rows' computations in passes that stay in the CPU's cache (1.1-1.25x on
#                       the prompt pass of the embedded model, bit-identical logits)
#   stop_strings        a row ends once its text holds what the parser cuts at (a new
#                       "Question:", "Options:", "Roles:", ...: scoring.parse.read_to_end)
#                       or an end-of-sequence token; transformers' loop writes 32 tokens
#   settled_answers     ... or once its first line is complete and decides the answer by
#                       itself (scoring.parse.settled: " 2. Paris\nExplanation" is settled at
#                       the "E"); off: at a cut only
#   rows_leave          a finished row leaves the batch: its key/value cache rows (and, for
#                       seq2seq, its encoder states) are selected out (`Cache.batch_select_indices`),
#                       so every later step computes only unfinished rows and the cache stays
#                       as small as they are. Off: finished rows are fed padding until every
#                       row has finished (what transformers does)
#
# `Speedups` switches each off for benchmarks/generation.py's ablations; runs use all of them.
# Rows are independent in every step (their own attention mask and positions), so leaving the
# batch changes no other row's computation; in reduced precision the matrix kernels may still
# round a row differently at another batch size (as batch composition already did), which the
# identity checks measure (tests/test_generate.py, benchmarks/generation.py).
#
# `processor(ids, logits, rows)` is Decoder.process: it sees, like transformers' logits
# processors, the sequences so far (prompt and answer; seq2seq: the decoder's) and the step's float32
# logits of the rows still in the batch, `rows` naming each one's index in `requests`.


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


def generate_batch(model, tokenizer, requests: list[Request], arch: str, pad_id: int, settings,
                   speed: Speedups = FAST, prompt_tokens: int = 0) -> list[Result]:
    """Generate an answer for every request of one batch (transformers backend): scoring.generate.decode's loop,
    each row ending at its end-of-sequence token or once its parsed answer is settled (parse.settled, with
    the request's answer labels and options; without them, at a cut: parse.read_to_end). `prompt_tokens`:
    the most padded tokens of one prompt pass (the backend's scoring budget; 0: the batch in one pass)."""
    n_pad = ([0] * len(requests) if arch == "seq2seq"  # the processor sees decoder ids, never left-padded
             else [max(len(r.prompt_ids) for r in requests) - len(r.prompt_ids) for r in requests])
    eos = eos_ids(model, tokenizer)
    decoder = Decoder(settings, requests, n_pad, model.device)

    def stop(row: int, text: str) -> bool:
        r = requests[row]
        if speed.settled_answers and (r.answer_labels or r.answer_options):
            return settled(text, r.answer_labels, r.answer_options)
        return read_to_end(text)

    new = decode(model, tokenizer, requests, arch, pad_id, settings.max_new_tokens, eos, decoder.process, stop, speed,
                 prompt_tokens)
    return results(model, tokenizer, requests, new, eos, decoder, pad_id)


@torch.inference_mode()
def generate_batch_hf(model, tokenizer, requests: list[Request], arch: str, pad_id: int, settings) -> list[Result]:
    """The reference: transformers' own loop (`model.generate`, every row `max_new_tokens` long unless it
    writes an end-of-sequence token) with the same processor. generate_batch's parsed answers equal these
    (tests/test_generate.py; benchmarks/generation.py measures both)."""
    from transformers import GenerationConfig, LogitsProcessorList

    dev = model.device
    seqs = [r.prompt_ids for r in requests]
    if arch == "seq2seq":
        ids, mask = right_pad(seqs, pad_id, dev)
        n_pad = [0] * len(seqs)
    else:
        ids, mask, _ = left_pad(seqs, pad_id, dev)
        n_pad = [ids.shape[1] - len(s) for s in seqs]
    eos = eos_ids(model, tokenizer)
    config = GenerationConfig(max_new_tokens=settings.max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=eos or None, pad_token_id=pad_id, temperature=None, top_p=None,
                              top_k=None, repetition_penalty=None)
    decoder = Decoder(settings, requests, n_pad, dev)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                         logits_processor=LogitsProcessorList([decoder]))
    new = (out[:, 1:] if arch == "seq2seq" else out[:, ids.shape[1]:]).tolist()
    new = [next((t[:i + 1] for i, x in enumerate(t) if x in eos), t) for t in new]
    return results(model, tokenizer, requests, new, eos, decoder, pad_id)


def results(model, tokenizer, requests: list[Request], new: list[list[int]], eos: list[int], decoder: Decoder,
            pad_id: int) -> list[Result]:
    """Each row's new tokens (up to its end-of-sequence token) as a Result: the text and the labels' logits.
    Labels after a shared prefix (a space token) are read after prompt + prefix: where the model wrote
    the prefix itself, at that step of its own generation; elsewhere by one more prompt pass with
    logits at the last position only (letter scoring on the same prompt)."""
    out, later = [], []
    for row, r in enumerate(requests):
        tokens = new[row]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        n, k = len(tokens), len(r.label_prefix)
        if not k:
            out.append(label_result((decoder.first or {}).get(row), r.label_ids, text, n))
        elif tokens[:k] == r.label_prefix and decoder.at_labels and row in decoder.at_labels and k == decoder.label_step:
            out.append(label_result(decoder.at_labels[row], r.label_ids, text, n))
        else:
            out.append(Result(scores=[], probs=[], generation=text, n_new_tokens=n))
            later.append(row)
    if later:
        letter = letter_causal(model, [Request(requests[k].prompt_ids + requests[k].label_prefix,
                                               label_ids=requests[k].label_ids) for k in later], pad_id)
        for k, res in zip(later, letter):
            out[k] = replace(res, generation=out[k].generation, n_new_tokens=out[k].n_new_tokens)
    return out


def label_result(first_logits: Optional[torch.Tensor], label_ids: list[int], text: str, n_new: int) -> Result:
    """A generated answer as a Result: the text, and the labels' logits at the first generated position
    (with the labels' share of the vocabulary), or no scores when the labels are not single tokens."""
    if first_logits is None or not label_ids:
        return Result(scores=[], probs=[], generation=text, n_new_tokens=n_new)
    lab = first_logits[label_ids]
    mass = torch.exp(torch.logsumexp(lab, 0) - torch.logsumexp(first_logits, 0)).item()
    scores = lab.tolist()
    return Result(scores=scores, probs=softmax(scores), label_mass=mass, generation=text, n_new_tokens=n_new)
