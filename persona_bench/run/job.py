"""A job: one model on one grid of personas x questions, built once from its config before any
weights load, and passed whole to everything that runs it.

    job = Job.prepare(cfg)     # validate, roles, templates, personas, this shard's questions; no weights
    job.bind(tokenizer)        # the persona placement this model's tokenizer gets (inputs.prompts)

Everything that can fail without weights fails in `prepare`, so a bad value costs no model load.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

from persona_bench import __version__
from persona_bench.config.job_id import config_id, shard_suffix
from persona_bench.config.schema import Config
from persona_bench.config.validate import resolved_scoring, validate
from persona_bench.inputs import shards
from persona_bench.inputs.dataset import load_questions
from persona_bench.inputs.prompts import bound_placement
from persona_bench.inputs.roles import (
    Role,
    Template,
    build_roles,
    build_templates,
    personas,
)
from persona_bench.models.loading import check_available, preflight

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "gguf", "hydra-core", "omegaconf", "pandas",
            "numpy", "pyarrow", "bitsandbytes", "datasets")


def package_versions() -> dict:
    """Versions of Python, persona_bench and the packages that decide results (summary.json's stamp)."""
    out = {"python": platform.python_version(), "persona_bench": __version__}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Job:
    cfg: Config
    method: str  # letter | cloze | generate: scoring.method with `auto` resolved against the model's default
    fmt: str  # mmlu | paper | cloze: scoring.format with `auto` resolved against the method
    roles: list[Role]
    templates: list[Template]  # the control first
    grid: list[tuple[Template, Optional[Role]]]  # every persona scored, the control (role None) first
    questions: shards.ShardQuestions  # this shard's questions (all of them when unsharded)
    placement: Optional[str] = None  # system | user | plain: set by bind() once the tokenizer is known

    @classmethod
    def prepare(cls, cfg: Config) -> "Job":
        """Everything that can fail without weights: values, roles, templates, questions (this shard's), the
        grid, and (unless a dry run) that the model's files or hub entry can be found."""
        validate(cfg)
        preflight(cfg.model, cfg.device, dry_run=cfg.dry_run)
        method, fmt = resolved_scoring(cfg)
        roles = build_roles(cfg.role_set)
        templates = build_templates(cfg.template)
        grid = personas(roles, templates)
        questions = shards.select(load_questions(cfg.dataset, cfg.cache_dir), cfg.shard.index, cfg.shard.count)
        if cfg.shard.count > 1:
            log.info("shard %d of %d: %d of the %d questions, with all their personas", cfg.shard.index,
                     cfg.shard.count, len(questions), questions.n_total)
        if not cfg.dry_run:
            check_available(cfg.model)  # a hub model neither cached nor reachable fails here, before any output
        return cls(cfg, method, fmt, roles, templates, grid, questions)

    def bind(self, tokenizer) -> str:
        """Resolve model.placement against the tokenizer's chat template (the study's own placement for its
        prompts: inputs.prompts.bound_placement); returns it."""
        self.placement = bound_placement(tokenizer, self.cfg.model, self.fmt)
        return self.placement

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def n_prompts(self) -> int:
        return len(self.questions) * len(self.grid)

    @property
    def config_id(self) -> str:
        return config_id(self.cfg)

    @property
    def run_name(self) -> str:
        """<model>-<whole job's id>[-shard<i>of<n>]: the name of its folder and its W&B run."""
        cfg = self.cfg
        return f"{cfg.model.name}-{config_id(cfg, shard=False)}{shard_suffix(cfg.shard.index, cfg.shard.count)}"

    def describe(self) -> str:
        return (f"{self.n_prompts} prompts: {len(self.questions)} questions x {len(self.grid)} personas "
                f"({len(self.roles)} roles, templates {[t.name for t in self.templates[1:]]} + control); "
                f"placement={self.placement}, scoring={self.method}/{self.fmt}")
