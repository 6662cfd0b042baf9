"""A job's questions: the source loaded, the sample resolved, subjects filtered, deduplicated and
subsampled, every step checked (dataset.*).

A shipped sample (dataset.sample, e.g. the paper's 2,457-row sample) is a list of identities
(subject + content hash, see questions.py) resolved against the source at run time: the project
never ships question text.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Optional

import pandas as pd

from persona_bench.config.errors import ConfigError, did_you_mean
from persona_bench.config.schema import DatasetConfig, default_cache_dir
from persona_bench.inputs.questions import Question, dedupe, number_repeats, subsample
from persona_bench.inputs.sources import SOURCES

log = logging.getLogger(__name__)

SHIPPED_SAMPLES = ("mmlu_paper",)


def read_sample(sample: str) -> pd.DataFrame:
    """A shipped identity list by name, or a CSV with columns subject, content_hash (and optional extras)."""
    if sample in SHIPPED_SAMPLES:
        with resources.files("persona_bench.resources").joinpath(f"{sample}_sample.csv").open("rb") as fh:
            df = pd.read_csv(io.BytesIO(fh.read()), keep_default_na=False, dtype={"content_hash": str})
    else:
        path = Path(sample).expanduser()
        if not path.is_file():
            raise ConfigError(f"dataset.sample={sample!r} is neither a shipped sample ({', '.join(SHIPPED_SAMPLES)}) nor a CSV file")
        df = pd.read_csv(path, keep_default_na=False, dtype={"content_hash": str})
    missing = {"subject", "content_hash"} - set(df.columns)
    if missing:
        raise ConfigError(f"dataset.sample={sample!r}: missing column(s) {', '.join(sorted(missing))}")
    return df


def resolve_sample(pool: list[Question], sample: pd.DataFrame, name: str) -> list[Question]:
    """The sample's questions, in the sample's order; fails listing identities the source lacks."""
    by_id = {}
    for q in pool:
        by_id.setdefault(q.id, q)
    out, unresolved, wrong = [], [], []
    for row in sample.to_dict("records"):
        qid = f"{row['subject']}/{row['content_hash']}"
        q = by_id.get(qid)
        if q is None:
            unresolved.append(qid)
            continue
        if "answer" in row and str(row["answer"]) != "" and int(row["answer"]) != q.answer:
            wrong.append(qid)
        meta = {k: row[k] for k in ("split", "paper_question_id") if k in row}
        out.append(Question(q.id, q.subject, q.question, q.choices, q.answer, meta))
    if unresolved:
        raise ConfigError(
            f"dataset.sample={name}: {len(unresolved)} of {len(sample)} identities are not in the source, "
            f"e.g. {', '.join(unresolved[:5])}"
        )
    if wrong:
        raise RuntimeError(f"dataset.sample={name}: the source's answer differs for {len(wrong)} questions, e.g. {wrong[:5]}")
    return out


def check_subjects(cfg: DatasetConfig, pool: list[Question], questions: list[Question]) -> None:
    """dataset.subjects names subjects of the dataset (the sample's, when there is one); ConfigError
    naming the unknown ones, their close matches and the valid subjects otherwise."""
    valid = sorted({q.subject for q in questions})
    in_source = {q.subject for q in pool}
    outside = [s for s in cfg.subjects if s in in_source and s not in valid]  # MMLU subjects the sample lacks
    if outside:
        raise ConfigError(f"dataset.subjects: {', '.join(outside)} not in the sample {cfg.sample} of dataset "
                          f"{cfg.name}; its {len(valid)} subjects: {', '.join(valid)} "
                          "(every MMLU subject: dataset=mmlu)")
    bad = [s for s in cfg.subjects if s not in in_source]
    if bad:
        named = ", ".join(s + (did_you_mean(s, valid) or did_you_mean(s.replace(" ", "_").lower(), valid)) for s in bad)
        raise ConfigError(f"dataset.subjects: unknown subject(s) {named}; valid subjects of dataset {cfg.name}: "
                          f"{', '.join(valid)}")


def load_questions(cfg: DatasetConfig, cache_dir: Optional[str] = None) -> list[Question]:
    """Load, resolve the sample, filter, dedupe and subsample; every step checked."""
    cache = default_cache_dir(cache_dir)
    sample = read_sample(cfg.sample) if cfg.sample else None  # fail on a bad sample before fetching
    pool = SOURCES[cfg.source](cfg, cache)
    if not pool:
        raise ConfigError(f"dataset {cfg.name}: source {cfg.source} gave no questions")
    questions = resolve_sample(pool, sample, cfg.sample) if sample is not None else pool
    if not cfg.dedupe:  # repeats stay, one identity each, numbered in the sample's (or source's) order
        questions = number_repeats(questions)
    if cfg.subjects is not None:
        check_subjects(cfg, pool, questions)
        wanted = set(cfg.subjects)
        questions = [q for q in questions if q.subject in wanted]
    if cfg.split is not None:
        if sample is None or "split" not in sample.columns:
            raise ConfigError(f"dataset.split={cfg.split} needs a sample with a split column (e.g. dataset=mmlu_paper)")
        kept = [q for q in questions if q.meta.get("split") == cfg.split]
        if not kept:
            splits = Counter(str(q.meta.get("split")) for q in questions)
            of = f" of subjects {', '.join(cfg.subjects)}" if cfg.subjects else ""
            raise ConfigError(
                f"dataset {cfg.name}: no question{of} is in split {cfg.split}; the splits there: "
                f"{', '.join(f'{s} ({n} questions)' for s, n in sorted(splits.items()))}"
            )
        questions = kept
    if cfg.dedupe:
        questions = dedupe(questions)
    questions = subsample(questions, cfg.per_subject, cfg.limit, cfg.seed)
    if not questions:
        raise ConfigError(
            f"dataset {cfg.name} selects no question (subjects={cfg.subjects}, split={cfg.split}, "
            f"per_subject={cfg.per_subject}, limit={cfg.limit})"
        )
    counts = Counter(q.subject for q in questions)
    log.info("dataset %s: %d questions in %d subjects: %s", cfg.name, len(questions), len(counts), dict(sorted(counts.items())))
    return questions
