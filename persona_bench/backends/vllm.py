"""Optional vLLM backend for scoring.method=generate on CUDA GPUs (the paper's engine).

    pip install -r requirements-vllm.txt      # in its own environment: vLLM pins its own torch
    python run.py scoring=generate_paper scoring.generate.backend=vllm model=llama2

vLLM is not a dependency of persona-bench: this module imports it only when the backend is chosen
(config.validate fails early, naming the requirements file, when it is missing). It generates only:
letter and cloze scoring and persona perplexity need the Hugging Face backend. The prompts are the
same token ids the transformers backend feeds (rendered and tokenized by the runner), and each
prompt gets its own seed, as with the hf backend; vLLM's sampler is not transformers', so sampled
answers differ between the backends (greedy ones agree up to kernel rounding). The labels' logit
answer on the same prompt comes from the first generated token's top-20 log-probabilities: a label
outside them is below every label inside, so the argmax is exact when any label is among them, and
-1 when none is.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

from persona_bench.config.errors import ConfigError
from persona_bench.config.schema import GenerateConfig, ModelConfig
from persona_bench.models.devices import resolve_device, resolve_dtype
from persona_bench.models.loading import check_available, loaded_revision, model_dir
from persona_bench.scoring.requests import Request, Result, softmax

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # first-token log-probabilities kept, to read the labels' logit answer


def load_vllm(cfg, tokenizer_dir: str, revision: str, dtype: str) -> Any:
    """A vllm.LLM for the model (hub id or local directory), with the run's dtype; never remote code."""
    try:
        from vllm import LLM
    except ImportError as e:  # validate() checks first; this covers a broken install
        raise ImportError(f"scoring.generate.backend=vllm: vLLM does not import ({e}); pip install -r "
                          "requirements-vllm.txt") from None
    return LLM(model=tokenizer_dir, tokenizer=tokenizer_dir, revision=revision,
               dtype={"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, "auto"),
               trust_remote_code=False, seed=0)


def sampling_params(settings, seed: int | None, logprobs: bool):
    """vLLM's SamplingParams for one prompt: temperature 0 is vLLM's greedy decoding."""
    from vllm import SamplingParams

    sampled = settings.decoding == "sampled"
    return SamplingParams(
        temperature=settings.temperature if sampled else 0.0,
        top_p=settings.top_p if sampled else 1.0,
        top_k=(settings.top_k or -1) if sampled else -1,
        repetition_penalty=settings.repetition_penalty,
        max_tokens=settings.max_new_tokens,
        seed=seed if sampled else None,
        logprobs=TOP_LOGPROBS if logprobs else None,
        skip_special_tokens=True,
    )


def generate_vllm(llm, requests: list[Request], settings) -> list[Result]:
    """One batch of requests -> one Result each, in order (vLLM schedules the batch itself)."""
    prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
    params = [sampling_params(settings, r.seed, bool(r.label_ids)) for r in requests]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [_result(out.outputs[0], r) for out, r in zip(outputs, requests)]


def _result(completion, r: Request) -> Result:
    text, n_new = completion.text, len(completion.token_ids)
    first = (completion.logprobs or [None])[0] if r.label_ids else None
    if not first:
        return Result(scores=[], probs=[], generation=text, n_new_tokens=n_new)
    seen = {tid: float(getattr(lp, "logprob", lp)) for tid, lp in first.items()}
    if not any(t in seen for t in r.label_ids):
        return Result(scores=[], probs=[], generation=text, n_new_tokens=n_new)
    scores = [seen.get(t, float("-inf")) for t in r.label_ids]
    return Result(scores=scores, probs=softmax(scores), generation=text, n_new_tokens=n_new)


def load_vllm_model(cfg: ModelConfig, device: str = "auto", cache_dir: Optional[Path] = None) -> tuple[Any, Any, dict]:
    """scoring.generate.backend=vllm: the model as a vllm.LLM with the transformers
    tokenizer that renders and tokenizes the prompts; the same info keys as load_model."""
    from transformers import AutoTokenizer

    dev = resolve_device(device)
    if dev.type != "cuda":
        raise ConfigError(f"scoring.generate.backend=vllm needs a CUDA GPU (device={device} resolved to {dev}); use backend=hf")
    dtype = resolve_dtype(cfg.dtype, dev, cfg.arch)
    check_available(cfg)
    t0 = time.perf_counter()
    where, kwargs, stamp = model_dir(cfg, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    llm = load_vllm(cfg, where, kwargs.get("revision", cfg.revision), dtype)
    info = {"model": cfg.name, "path": cfg.path, "source": cfg.source,
            "revision": loaded_revision(cfg, None, where, stamp), "arch": cfg.arch,
            "dtype": dtype, "quantization": cfg.quantization, "device": str(dev), "backend": "vllm",
            "n_params": int(cfg.params_b * 1e9),
            "n_non_embedding_params": int((cfg.non_embedding_params_b or cfg.params_b) * 1e9),
            "load_seconds": round(time.perf_counter() - t0, 2), **stamp}
    log.info("loaded %s with vLLM, %s on %s in %.1f s", cfg.name, dtype, dev, info["load_seconds"])
    return llm, tokenizer, info


class VLLMBackend:
    """A vllm.LLM behind the backend contract (base.Backend): generation only."""

    def __init__(self, llm, tokenizer, info: dict, batch_tokens: int):
        self.llm, self.tokenizer, self.info = llm, tokenizer, info
        self.batch_tokens = batch_tokens

    @classmethod
    def load(cls, cfg: ModelConfig, device: str = "auto", cache_dir: Optional[Path] = None) -> "VLLMBackend":
        llm, tokenizer, info = load_vllm_model(cfg, device, cache_dir)
        return cls(llm, tokenizer, info, cfg.batch_tokens)

    def batch_budget(self, method: str) -> int:
        """vLLM schedules its own memory: a batch only bounds how much work is saved at once."""
        from persona_bench.scoring.generate import BATCH_FACTOR

        return (self.batch_tokens or 1 << 18) * (BATCH_FACTOR if method == "generate" else 1)

    def packed_rows(self, method: str) -> bool:
        return False

    def score(self, requests: list[Request], method: str, budget: int) -> list[Result]:
        raise ConfigError(f"scoring.method={method} with scoring.generate.backend=vllm: the vLLM backend generates "
                          "only; use backend=hf")

    def generate(self, requests: list[Request], settings: GenerateConfig) -> list[Result]:
        return generate_vllm(self.llm, requests, settings)

    def perplexity(self, texts: list[str]) -> Optional[list[dict]]:
        return None  # python -m persona_bench.scoring.perplexity RUN_DIR computes it with transformers

    def reference(self, requests: list[Request], method: str) -> None:
        return None  # vLLM has no plain reference path here; the self-check is recorded as not available

    def free_memory(self) -> None:
        pass
