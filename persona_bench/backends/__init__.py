"""Model backends behind one contract (base.Backend): Hugging Face transformers (hf.py), vLLM for
generation on CUDA (vllm.py), and a deterministic dummy for tests (dummy.py).

    backend = load_backend(cfg, method)       # the one place that chooses a backend from the config
"""

from __future__ import annotations

from persona_bench.backends.base import Backend
from persona_bench.config.schema import Config, default_cache_dir


def load_backend(cfg: Config, method: str, device: str | None = None) -> Backend:
    """The backend a job's config asks for, loaded on `device` (default cfg.device): vLLM when the job
    generates with scoring.generate.backend=vllm, else transformers."""
    device = device or cfg.device
    cache = default_cache_dir(cfg.cache_dir)
    if method == "generate" and cfg.scoring.generate.backend == "vllm":
        from persona_bench.backends.vllm import VLLMBackend

        return VLLMBackend.load(cfg.model, device, cache)
    from persona_bench.backends.hf import HFBackend

    return HFBackend.load(cfg.model, device, cache, cloze_score=cfg.scoring.cloze_score)


__all__ = ["Backend", "load_backend"]
