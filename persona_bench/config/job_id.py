"""A job's identity: the config keys that decide its results, hashed into the id that names its folder.

Runtime keys (where and how a job runs: device, batch budget, tracking, output folder ...) are left
out, so a job resumes under another runtime setting and keeps its id."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from persona_bench.config.schema import Config

# Keys that change how or where a job runs but not its results: left out of the job's identity,
# so a job can resume with another batch budget, device, cache or tracking setting.
RUNTIME_KEYS = ("hydra", "output_dir", "cache_dir", "dry_run", "device", "threads", "progress", "overwrite",
                "tracking", "sweep_name", "report")

RUNTIME_MODEL_KEYS = ("batch_tokens",)
RUNTIME_SCORING_KEYS = ("self_check", "self_check_min")  # the numerical self-check measures, it decides nothing


def job_identity(cfg: Any, shard: bool = True) -> dict:
    """The part of a config (a typed Config, a DictConfig or a plain dict) that decides a job's results.

    The shard block is part of it only for a sharded job (shard.count > 1), so an unsharded job keeps
    the identity it had before sharding existed; shard=False leaves it out in any case: the identity
    of the whole job the shard belongs to."""
    from dataclasses import asdict

    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, Config):
        cfg = asdict(cfg)
    elif isinstance(cfg, DictConfig):
        keep = [k for k in cfg.keys() if k not in RUNTIME_KEYS]
        cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keep), resolve=True)
    ident = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}
    ident["model"] = {k: v for k, v in ident.get("model", {}).items() if k not in RUNTIME_MODEL_KEYS}
    scoring = {k: v for k, v in (ident.get("scoring") or {}).items() if k not in RUNTIME_SCORING_KEYS}
    ident["scoring"] = scoring
    if scoring.get("method") != "generate":  # generation settings decide nothing else: ids stay as before
        scoring.pop("generate", None)
    split = ident.pop("shard", None) or {}
    if shard and split.get("count", 1) != 1:
        ident["shard"] = split
    return ident


def config_id(cfg: Any, shard: bool = True) -> str:
    """8 hex digits naming a job by its identity: the same config gives the same run directory.
    shard=False: the id of the whole job a shard belongs to (the same for all its shards)."""
    text = json.dumps(job_identity(cfg, shard), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def shard_suffix(index: int, count: int) -> str:
    """'-shard<index>of<count>' naming a shard's run directory after its job's; '' when unsharded."""
    return "" if count == 1 else f"-shard{index}of{count}"
