"""A deterministic backend with no model, for tests of everything around the model: the runner, the
store and resumption, batching, the out-of-memory path, sharding, tracking and the report.

    backend = DummyBackend()                   # any config; run(cfg, backend=backend)

Its tokenizer splits text into words and punctuation, each with the whitespace before it (so " A"
after "Answer:" is one token, as the label resolution expects), and gives each piece a stable id
from a hash. Every score is a hash of the request's tokens: the same request gets the same result
whatever batch it is in, in any process, so an interrupted and resumed job equals an uninterrupted
one exactly. `oom_rows` makes any batch of more rows raise torch.OutOfMemoryError, as a GPU would.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Optional, Union

import torch

from persona_bench.config.schema import GenerateConfig
from persona_bench.scoring.reference import Reference
from persona_bench.scoring.requests import Request, Result, softmax

PAD, EOS, BOS = 0, 1, 2
_PIECE = re.compile(r"\s*[A-Za-z0-9]+|\s*[^\sA-Za-z0-9]|\s+")


def _unit(*parts) -> float:
    """A number in [0, 1) from a hash of `parts`."""
    h = hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
    return int(h, 16) / 16 ** 12


class DummyTokenizer:
    """Word-and-punctuation pieces with stable ids; BOS in front when special tokens are added; no chat
    template (prompts are plain text)."""

    pad_token_id, eos_token_id, bos_token_id = PAD, EOS, BOS
    chat_template = None

    def __init__(self):
        self.pieces: dict[int, str] = {}

    def _ids(self, text: str, add_special_tokens: bool) -> list[int]:
        ids = [BOS] if add_special_tokens else []
        for piece in _PIECE.findall(text):
            i = 3 + int(hashlib.sha256(piece.encode()).hexdigest()[:8], 16) % 1_000_000
            self.pieces[i] = piece
            ids.append(i)
        return ids

    def __call__(self, text: Union[str, list[str]], add_special_tokens: bool = True, **_) -> dict:
        if isinstance(text, str):
            return {"input_ids": self._ids(text, add_special_tokens)}
        return {"input_ids": [self._ids(t, add_special_tokens) for t in text]}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.pieces.get(int(i), "") for i in ids if int(i) > BOS or not skip_special_tokens)

    def __len__(self) -> int:
        return 1_000_003


class DummyBackend:
    """See the module's docstring and base.Backend."""

    def __init__(self, batch_tokens: int = 4096, cloze_score: str = "mean", oom_rows: Optional[int] = None,
                 name: str = "dummy"):
        self.tokenizer = DummyTokenizer()
        self.batch_tokens = batch_tokens
        self.cloze_score = cloze_score
        self.oom_rows = oom_rows  # batches of more rows than this raise torch.OutOfMemoryError
        self.calls: list[int] = []  # rows of every batch asked for, in order
        self.info = {"model": name, "path": "dummy", "source": "dummy", "revision": None, "arch": "causal",
                     "dtype": "fp32", "quantization": "none", "device": "cpu", "backend": "dummy", "n_params": 0,
                     "n_non_embedding_params": 0, "load_seconds": 0.0}

    def _check(self, requests: list[Request]) -> None:
        self.calls.append(len(requests))
        if self.oom_rows is not None and len(requests) > self.oom_rows:
            raise torch.OutOfMemoryError(f"dummy: {len(requests)} rows > oom_rows={self.oom_rows}")

    def batch_budget(self, method: str) -> int:
        return self.batch_tokens

    def packed_rows(self, method: str) -> bool:
        return False

    def score(self, requests: list[Request], method: str, budget: int) -> list[Result]:
        self._check(requests)
        out = []
        for r in requests:
            key = tuple(r.prompt_ids)
            if method == "letter":
                scores = [8 * _unit(key, t) - 4 for t in r.label_ids]
                out.append(Result(scores=scores, probs=softmax(scores), label_mass=0.5))
                continue
            sums = [-len(o) * (0.5 + 2.5 * _unit(key, tuple(o))) for o in r.option_ids]
            n = [len(o) for o in r.option_ids]
            scores = [s / max(k, 1) for s, k in zip(sums, n)] if self.cloze_score == "mean" else list(sums)
            out.append(Result(scores=scores, probs=softmax(scores), logprob_sum=sums, n_tokens=n))
        return out

    def generate(self, requests: list[Request], settings: GenerateConfig) -> list[Result]:
        """The answer " <label>" for a label picked by a hash of the prompt (and the seed, when sampled); the
        labels' logits as letter scoring gives them."""
        self._check(requests)
        out = []
        for r in requests:
            if not r.label_ids:
                out.append(Result(scores=[], probs=[], generation=" 1", n_new_tokens=1))
                continue
            salt = r.seed if settings.decoding == "sampled" else None
            k = int(_unit(tuple(r.prompt_ids), salt) * len(r.label_ids))
            text = self.tokenizer.decode(r.label_prefix + [r.label_ids[k]], skip_special_tokens=True)
            scores = [8 * _unit(tuple(r.prompt_ids), t) - 4 for t in r.label_ids]
            out.append(Result(scores=scores, probs=softmax(scores), label_mass=0.5, generation=text,
                              n_new_tokens=len(r.label_prefix) + 1))
        return out

    def perplexity(self, texts: list[str]) -> Optional[list[dict]]:
        out = []
        for t in texts:
            n = len(self.tokenizer(t, add_special_tokens=False)["input_ids"])
            nll = 1 + 4 * _unit(t) if n else None
            out.append({"n_tokens": n, "nll_mean": nll, "perplexity": math.exp(nll) if nll is not None else None})
        return out

    def reference(self, requests: list[Request], method: str) -> Optional[Reference]:
        """The same scores as score() (and generate()'s label logits), one request at a time like the real
        reference path: the dummy has one exact path, so its self-check agrees fully. Not counted in `calls`."""
        calls = list(self.calls)
        try:
            if method == "generate":
                results = [Result(x.scores, x.probs, x.label_mass) for r in requests
                           for x in self.generate([r], GenerateConfig())]
            else:
                results = [x for r in requests for x in self.score([r], method, self.batch_tokens)]
        finally:
            self.calls = calls
        return Reference(results, path="dummy: the same deterministic scores", dtype="fp32", note="dummy backend")

    def free_memory(self) -> None:
        pass
