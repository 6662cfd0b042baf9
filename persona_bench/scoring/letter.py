"""Letter scoring: one forward pass per prompt; the answer-label tokens' logits at the answer position
(the last prompt position of a causal model, computed only there; the first decoder step of a
seq2seq model). Saves the softmax over the labels and the full-vocabulary probability mass the
labels take."""

from __future__ import annotations

import torch

from persona_bench.scoring.logits import head_logits, label_matrix, left_pad, right_pad
from persona_bench.scoring.requests import Request, Result, softmax


def letter_results(picked: torch.Tensor, logz: torch.Tensor, requests: list[Request]) -> list[Result]:
    """Each row's label logits (its first len(label_ids) columns) and the labels' share of the vocabulary."""
    out = []
    for i, r in enumerate(requests):
        lab = picked[i, : len(r.label_ids)]
        mass = torch.exp(torch.logsumexp(lab, 0) - logz[i]).item()
        scores = lab.tolist()
        out.append(Result(scores=scores, probs=softmax(scores), label_mass=mass))
    return out


@torch.inference_mode()
def letter_causal(model, requests: list[Request], pad_id: int) -> list[Result]:
    ids, mask, pos = left_pad([r.prompt_ids for r in requests], pad_id, model.device)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    return letter_results(*head_logits(model, hidden[:, -1], label_matrix(requests, hidden.device)), requests)


@torch.inference_mode()
def letter_seq2seq(model, requests: list[Request], pad_id: int) -> list[Result]:
    ids, mask = right_pad([r.prompt_ids for r in requests], pad_id, model.device)
    start = torch.full((len(requests), 1), model.config.decoder_start_token_id, dtype=torch.long, device=model.device)
    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=start, use_cache=False).logits[:, 0].float()
    return letter_results(logits.gather(1, label_matrix(requests, logits.device)), torch.logsumexp(logits, -1), requests)
