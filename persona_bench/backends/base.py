"""The backend contract: what the runner asks of a loaded model, and nothing else.

A backend holds a model and its tokenizer. The runner renders and tokenizes prompts with
`backend.tokenizer`, cuts batches under `backend.batch_budget(method)`, and hands each batch of
requests to `score` or `generate`, which return one Result per request, in order (as
lm-evaluation-harness's loglikelihood / generate_until do). The runner never asks which backend it
has: the Hugging Face backend (hf.py), the vLLM backend (vllm.py) and the deterministic dummy
backend of the tests (dummy.py) are interchangeable.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

from persona_bench.config.schema import GenerateConfig
from persona_bench.scoring.reference import Reference
from persona_bench.scoring.requests import Request, Result


@runtime_checkable
class Backend(Protocol):
    tokenizer: Any  # renders (chat template) and tokenizes prompts: a transformers tokenizer or one with its interface
    info: dict  # what was loaded, for summary.json: model, path, source, revision, arch, dtype, quantization, device,
    #             n_params, n_non_embedding_params, load_seconds, and the weights' sha256 where known

    def batch_budget(self, method: str) -> int:
        """Padded tokens per batch for `method` (letter | cloze | generate)."""

    def packed_rows(self, method: str) -> bool:
        """True when a batch of `method` costs rows x its widest packed row (a cloze request's prompt and all its
        options in one row, scoring.cloze.packed_length); False when it costs rows x its widest prompt plus
        every option row (run.batching.make_batches)."""

    def score(self, requests: list[Request], method: str, budget: int) -> list[Result]:
        """Logit scores (method letter or cloze) of one batch, cut under `budget` padded tokens."""

    def generate(self, requests: list[Request], settings: GenerateConfig) -> list[Result]:
        """A generated answer per request (Result.generation), with the labels' logits at the first generated
        position where the backend has them."""

    def perplexity(self, texts: list[str]) -> Optional[list[dict]]:
        """{n_tokens, nll_mean, perplexity} per text (scoring.perplexity), or None when the backend cannot
        compute it."""

    def reference(self, requests: list[Request], method: str) -> Optional[Reference]:
        """The numerical self-check's results for `requests` (letter | cloze | generate: the labels' logit answer),
        computed on an independent path: fp32 where memory allows, batch 1, no padding, no packing, no KV-cache
        reuse (scoring.reference); None when the backend has no such path (recorded as not available)."""

    def free_memory(self) -> None:
        """Release cached memory after an out-of-memory error, before a smaller batch is tried."""
