"""Model backends behind one contract (base.Backend): Hugging Face transformers (hf.py), vLLM for
generation on CUDA (vllm.py), and a deterministic dummy for tests (dummy.py).

    backend = load_backend(cfg, method)       # the one place that chooses a backend from the config
    keep_loaded()                             # run.py in a sweep: the next job with the same model reuses it
    drop_kept()                               # runner: a job that claimed a GPU leaves nothing on it
"""

from __future__ import annotations

import dataclasses
import json
import logging

from persona_bench.backends.base import Backend
from persona_bench.config.schema import Config, default_cache_dir
from persona_bench.models.devices import release_memory

log = logging.getLogger(__name__)

# Hydra's basic launcher runs a sweep's jobs one after another in one process (the joblib launcher: in a few
# worker processes). With keep_loaded() on, the last backend stays loaded, and a job whose model, device and
# loading options equal the previous job's takes it instead of loading the weights again.
_kept: dict = {"on": False, "key": None, "backend": None}


def keep_loaded(on: bool = True) -> None:
    """Keep the last loaded backend for the next job in this process (run.py turns it on in a sweep); off drops it."""
    _kept["on"] = on
    if not on:
        drop_kept()


def drop_kept() -> None:
    """Let go of the kept backend: before another model loads (two models must never share the memory), and when a
    job that claimed one of several GPUs ends (its claim ends with it: another job may take that GPU next)."""
    if _kept["backend"] is not None:
        _kept.update(key=None, backend=None)
        release_memory()


def load_backend(cfg: Config, method: str, device: str | None = None) -> Backend:
    """The backend a job's config asks for, loaded on `device` (default cfg.device): vLLM when the job
    generates with scoring.generate.backend=vllm, else transformers. With keep_loaded() on, the previous job's
    backend when everything that decides the loaded weights is the same."""
    device = device or cfg.device
    cache = default_cache_dir(cfg.cache_dir)
    vllm = method == "generate" and cfg.scoring.generate.backend == "vllm"
    key = json.dumps([vllm, str(device), str(cache), cfg.scoring.cloze_score, dataclasses.asdict(cfg.model)],
                     sort_keys=True, default=str)
    if _kept["on"] and _kept["key"] == key:
        backend = _kept["backend"]
        backend.info = {**backend.info, "load_seconds": 0.0, "reused": True}
        log.info("model %s: the weights an earlier job of this sweep loaded (same model, device and options)",
                 cfg.model.name)
        return backend
    drop_kept()
    if vllm:
        from persona_bench.backends.vllm import VLLMBackend

        backend = VLLMBackend.load(cfg.model, device, cache)
    else:
        from persona_bench.backends.hf import HFBackend

        backend = HFBackend.load(cfg.model, device, cache, cloze_score=cfg.scoring.cloze_score)
    if _kept["on"]:
        _kept.update(key=key, backend=backend)
    return backend


__all__ = ["Backend", "drop_kept", "keep_loaded", "load_backend"]
