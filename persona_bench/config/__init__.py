"""Configuration: the typed schema of every config group (Hydra's ConfigStore), value checks, the
job's identity, and the errors a user can fix.

    register()        the schema as `schema` in Hydra's ConfigStore, and the resolvers naming run folders
    validate(cfg)     every value check that needs no weights and no network
    config_id(cfg)    8 hex digits naming a job by the config keys that decide its results

Importing this package does not import Hydra or torch.
"""

from __future__ import annotations

from persona_bench.config.errors import (
    ConfigError,
    Unavailable,
    UserError,
    did_you_mean,
)
from persona_bench.config.job_id import config_id, job_identity, shard_suffix
from persona_bench.config.schema import (
    Config,
    DatasetConfig,
    GenerateConfig,
    ModelConfig,
    ReportConfig,
    RoleConfig,
    RoleSetConfig,
    ScoringConfig,
    ShardConfig,
    TemplateConfig,
    TrackingConfig,
    default_cache_dir,
)
from persona_bench.config.slurm import register_slurm, slurm_minutes
from persona_bench.config.validate import resolved_scoring, validate

__all__ = ["Config", "ConfigError", "DatasetConfig", "GenerateConfig", "ModelConfig", "ReportConfig", "RoleConfig",
           "RoleSetConfig", "ScoringConfig", "ShardConfig", "TemplateConfig", "TrackingConfig", "Unavailable", "UserError",
           "config_id", "default_cache_dir", "did_you_mean", "job_identity", "register", "resolved_scoring",
           "shard_suffix", "slurm_minutes", "validate"]


def register() -> None:
    """Register the schema as `schema` in Hydra's ConfigStore, and the resolvers that conf/hydra/default.yaml
    uses to name run directories after the job's identity: `${config_id:}` (the whole job's id, shared by
    its shards; it refuses a model.name, experiment_name or sweep_name that is not a plain folder name) and `${shard_suffix:}` ('-shard<i>of<n>', or '' when unsharded); `${slurm_minutes:...}` and the SLURM launcher's
    schema (config/slurm.py)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from persona_bench.config.validate import PATH_NAMES, check_path_names

    def run_id(*, _root_) -> str:  # the names beside it in a run folder's path are checked first
        check_path_names({key: OmegaConf.select(_root_, key, default=None) for key in PATH_NAMES})
        return config_id(_root_, shard=False)

    ConfigStore.instance().store(name="schema", node=Config)
    if not OmegaConf.has_resolver("config_id"):
        OmegaConf.register_new_resolver("config_id", run_id)
    if not OmegaConf.has_resolver("shard_suffix"):
        OmegaConf.register_new_resolver("shard_suffix",
                                        lambda *, _root_: shard_suffix(_root_.shard.index, _root_.shard.count))
    register_slurm()  # ${slurm_minutes:...} and the SLURM preset's schema (conf/hydra/launcher/slurm.yaml)
