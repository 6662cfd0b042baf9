"""The scoring contract: a Request (a prompt's tokens and what to score after it) in, a Result out.

Every backend takes one batch of requests and returns one Result per request, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class Request:
    prompt_ids: list[int]
    label_ids: list[int] = field(default_factory=list)  # letter: one token per label
    option_ids: list[list[int]] = field(default_factory=list)  # cloze: tokens of each option's continuation
    seed: Optional[int] = None  # generate (sampled): this prompt's generator seed (generate.prompt_seed)
    label_prefix: list[int] = field(default_factory=list)  # generate: tokens every label starts with (LabelResolver.split)
    answer_labels: tuple[str, ...] = ()  # generate: the labels and option texts the parser reads (scoring.parse),
    answer_options: tuple[str, ...] = ()  # so decoding stops once the answer is settled; empty: at a cut only

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


def softmax(xs: list[float]) -> list[float]:
    return torch.softmax(torch.tensor(xs, dtype=torch.float64), 0).tolist()
