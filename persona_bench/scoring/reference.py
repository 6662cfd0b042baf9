"""Reference scoring for the numerical self-check: the plainest path there is, one prompt at a time.

Batch size 1, no padding, no packing, none of the run's fast paths (head_logits, packed cloze rows,
regrouped cache rows, fused norms): the model's own forward pass and its own output layer, then fp32
arithmetic on the logits.

  letter    model(prompt).logits at the last position, log-softmax over the whole vocabulary; the
            labels' logits, their softmax and vocabulary mass (a seq2seq model: encoder and the first
            decoder step)
  cloze     the prompt in one forward pass, then each option's tokens continue from a copy of the
            model's own KV cache of it (as generation continues a prompt), the option tokens'
            log-probabilities over the whole vocabulary summed; the same numbers as one pass over
            prompt + option per option (lm-evaluation-harness's loglikelihood), the prompt encoded
            once instead of once per option (seq2seq: encoder and decoder per option)

  generate  the labels' logit answer on the same prompt (letter after the label prefix); the generated
            text is not checked

Causal models: the body (the model's own base model) runs one sequence at a time; its states that
predict a scored token go through the model's own output layer together, once per prompt (the rows
of a matrix product are independent, so the numbers are those of one product per sequence). In
fp32 on a CPU that product is the reference's largest cost: a 262,144-token vocabulary at 4 bytes is
read once per prompt instead of once per option, and the self-check of the demo takes about half
as long.

compare(run, reference) is what the self-check records: the share of identical predicted answers and
the largest absolute difference of the options' probabilities (Result.probs)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from persona_bench.scoring.cloze import cloze_result
from persona_bench.scoring.logits import cache_keyword, kv_cache_of, softcap
from persona_bench.scoring.requests import Request, Result, softmax


@dataclass
class Reference:
    """A backend's reference results for some requests, and how they were computed."""
    results: list[Result]
    path: str  # e.g. "fp32, batch 1, unpadded"
    dtype: str  # the reference's dtype: fp32, or the run's where no fp32 copy fit, or the quantization
    note: str = ""  # which weights: the run's model, an fp32 copy, ...


def _body(model, ids: list[int], cache=None):
    """The last hidden states of one unpadded sequence (the model's own base model, batch 1) and its KV
    cache; `cache`: a cache of the preceding tokens to continue from (copied, never modified)."""
    kw = {cache_keyword(type(model.base_model)): copy.deepcopy(cache)} if cache is not None else {}
    out = model.base_model(input_ids=torch.tensor([ids], dtype=torch.long, device=model.device), use_cache=True, **kw)
    return out.last_hidden_state[0], kv_cache_of(out)


def _head(model, states: torch.Tensor) -> torch.Tensor:
    """fp32 logits of hidden states (rows x hidden): the model's own output layer, with its logit
    soft-capping where the model has one (Gemma 2)."""
    return softcap(model, model.get_output_embeddings()(states).float())


def _seq2seq_logits(model, prompt: list[int], decoder: list[int]) -> torch.Tensor:
    """fp32 decoder logits of one prompt (encoder and decoder in one plain forward pass)."""
    dev = model.device
    start = model.config.decoder_start_token_id
    out = model(input_ids=torch.tensor([prompt], device=dev), decoder_input_ids=torch.tensor([[start] + decoder], device=dev),
                use_cache=False)
    return out.logits[0].float()


def _letter(logits: torch.Tensor, label_ids: list[int]) -> Result:
    """Labels' logits at one position (vocab,), their softmax and their share of the vocabulary."""
    lab = logits[label_ids]
    mass = torch.exp(torch.logsumexp(lab, 0) - torch.logsumexp(logits, 0)).item()
    scores = lab.tolist()
    return Result(scores=scores, probs=softmax(scores), label_mass=mass)


def _option_logprob(logits: torch.Tensor, option: list[int]) -> float:
    """Summed log-probability of `option` from the logits that predict its tokens (len(option), vocab)."""
    lp = torch.log_softmax(logits, dim=-1)
    return lp.gather(1, torch.tensor(option, device=lp.device).unsqueeze(1)).sum().item()


@torch.inference_mode()
def reference_one(model, r: Request, arch: str, method: str, cloze_by: str = "mean") -> Result:
    """One request scored on the reference path (see the module's docstring)."""
    if method in ("letter", "generate"):
        prefix = r.label_prefix if method == "generate" else []
        if arch == "seq2seq":
            return _letter(_seq2seq_logits(model, r.prompt_ids, prefix)[-1], r.label_ids)
        return _letter(_head(model, _body(model, r.prompt_ids + prefix)[0][-1:])[0], r.label_ids)
    if arch == "seq2seq":
        sums = [_option_logprob(_seq2seq_logits(model, r.prompt_ids, o[:-1]), o) if o else 0.0 for o in r.option_ids]
    else:
        sums = _causal_option_logprobs(model, r.prompt_ids, r.option_ids)
    return cloze_result(sums, [len(o) for o in r.option_ids], cloze_by)


def _causal_option_logprobs(model, prompt: list[int], options: list[list[int]]) -> list[float]:
    """Summed log-probability of each option after `prompt` (causal, batch 1, unpadded; 0 for an empty
    option): the prompt once (its last position predicts every option's first token), then each option
    but its last token continued from a fresh copy of the model's own cache of the prompt; the states
    that predict option tokens through the output layer together."""
    if not any(options):
        return [0.0] * len(options)
    hidden, cache = _body(model, prompt)
    states = [hidden[-1:]] + [_body(model, o[:-1], cache)[0] for o in options if len(o) > 1]
    logits = _head(model, torch.cat(states))
    sums, at = [], 1  # row 0 predicts every option's first token; each option's own rows follow in order
    for o in options:
        n = max(len(o) - 1, 0)
        sums.append(_option_logprob(torch.cat([logits[:1], logits[at : at + n]]), o) if o else 0.0)
        at += n
    return sums


def reference_scores(model, requests: list[Request], arch: str, method: str, cloze_by: str = "mean") -> list[Result]:
    """Every request on the reference path, one at a time, in order."""
    return [reference_one(model, r, arch, method, cloze_by) for r in requests]


def compare(run: list[Result], reference: list[Result]) -> dict:
    """How far the run's results are from the reference's: `agreement`, the share of requests with the same
    predicted option; `max_prob_diff` and `mean_prob_diff`, the largest and the mean (over requests) largest
    absolute difference of an option's probability (softmax over the options' scores)."""
    pairs = [(a, b) for a, b in zip(run, reference) if a.scores and b.scores]
    if not pairs:
        return {"n_compared": 0, "agreement": None, "max_prob_diff": None, "mean_prob_diff": None}
    diffs = [max(abs(x - y) for x, y in zip(softmax(a.scores), softmax(b.scores))) for a, b in pairs]
    return {"n_compared": len(pairs),
            "agreement": sum(a.pred == b.pred for a, b in pairs) / len(pairs),
            "max_prob_diff": max(diffs),
            "mean_prob_diff": sum(diffs) / len(diffs)}
