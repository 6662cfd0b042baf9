"""Helpers shared by tests: compose the real configs, make typed configs for tiny models."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from persona_bench.config import register
from persona_bench.config.schema import Config
from persona_bench.models.hub import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared" / "paper-data"

register()
register_resolvers()


_COMPOSED: dict = {}  # overrides -> the typed config: Hydra's compose takes about 0.5 s, and tests compose hundreds


def compose_cfg(overrides: list[str] = (), out: str = "/tmp/persona-bench-test") -> Config:
    """The real config composed as run.py composes it, as a typed Config (a fresh copy: tests change it). Each list
    of overrides is composed once per session; no value of conf/ depends on output_dir."""
    key = tuple(overrides)
    if key not in _COMPOSED:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            _COMPOSED[key] = OmegaConf.to_object(compose("config", overrides=[f"output_dir={out}", *overrides]))
    cfg = copy.deepcopy(_COMPOSED[key])
    if not any(o.startswith("output_dir=") for o in overrides):
        cfg.output_dir = out
    return cfg


def override(cfg: Config, **over) -> Config:
    """Set typed values on a composed config: section__field=value (or a top-level key=value)."""
    for key, value in over.items():
        section, _, field = key.partition("__")
        setattr(getattr(cfg, section), field, value) if field else setattr(cfg, section, value)
    return cfg


# A handful of questions and roles, quiet, local files only, no after-run steps.
SMALL = [
    "dataset.subjects=[clinical_knowledge,high_school_physics]",
    "dataset.per_subject=3",
    "role_set.names=[doctor,friend]",
    "progress=false",
    "tracking=none",
    "report.enabled=false",
    "report.perplexity=false",
    "report.self_pick=false",
]


def tiny_cfg(model_dir: Path, arch: str, out: Path, **over) -> Config:
    """The demo config pointed at a tiny local model, on a handful of questions."""
    cfg = compose_cfg([
        "model=gemma3_270m",
        f"model.name=tiny_{arch}",
        "model.source=local",
        f"model.path={model_dir}",
        f"model.arch={'seq2seq' if arch == 't5' else 'causal'}",
        "model.dtype=fp32",
        "model.params_b=0.0001",
        *SMALL,
    ], out=str(out))
    return override(cfg, **over)


def dummy_cfg(out: Path, **over) -> Config:
    """The demo config on a handful of questions, for runs on the dummy backend (backends.dummy): the
    embedded model's config, never loaded."""
    return override(compose_cfg(SMALL, out=str(out)), **over)


class BagOfWords:
    """Fake sentence encoder: hashed word counts (64 dims). Texts sharing words are similar."""

    def encode(self, texts, **kw):
        out = np.zeros((len(texts), 64))
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace("?", " ").split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1
        return out
