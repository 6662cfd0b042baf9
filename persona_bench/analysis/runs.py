"""Saved results, read back for the analysis: run directories -> one predictions table per model.

A run directory is any folder holding `summary.json` (written last, so it marks a complete job)
beside `predictions.parquet`. `load_runs` accepts single runs, a multirun directory (every
complete job below it) or several of either. Jobs of one model that share a scoring set-up are
one model's results however they were split (shards, several question sets, reruns): their
rows are concatenated and each (question, template, role) is kept once. Jobs of the same model
with different scoring set-ups stay apart, labelled `<model>-<config id>`. When the jobs of a model
are shards (shard.count > 1) and some shard of a job is not among the complete runs, a warning
names the missing shard indices (Results.warnings); the report goes on with the shards it has.

Runs of one model that ran differently (summary.json's `ran`: resolved dtype, revision, converted
weights, quantization, device kind; a key an older run did not record is not compared) are never
merged: a persona's answers and the control's on the same question would come from different
numerics, and the paired tests would measure that difference as a persona effect. They stay apart,
labelled by what differs (`<model>-bf16`, `<model>-fp32`), and a warning names both values and the
runs (Results.warnings: report.json's meta.warnings and the top of report.html).

Only what the analysis needs is loaded; the prompt text is kept for control rows only (the
question as the model saw it, for prompt-question similarity), which keeps a 1.2M-row paper
run small in memory. Runs with generated answers (scoring.method=generate) also keep `scoring`,
`parsed`, `parse_rule`, `logit_pred` and `logit_correct`, and the generated text of the unparsed
prompts only (cut to EXAMPLE_CHARS), for the report's examples. A run's `self_pick.parquet` (the
model picking its own persona per question) is read into Results.self_pick.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from persona_bench.outputs import (
    CONTROL,
    JOB,
    KEY,
    PERPLEXITY,
    PREDICTIONS,
    RAN_KEYS,
    SELF_PICK,
    SUMMARY,
    ran_differences,
    ran_stamp,
)

log = logging.getLogger(__name__)

COLUMNS = ["model", "question_id", "subject", "template", "role", "role_category", "gender", "domain",
           "interpersonal", "in_domain", "pred", "answer", "correct", "split"]  # the predictions columns read
GENERATION = ["scoring", "parsed", "parse_rule", "logit_pred", "logit_correct"]  # kept when present
EXAMPLE_CHARS = 1000  # generated text kept per unparsed prompt
SELF_PICK_READ = ["question_id", "subject", "parsed", "role"]  # the self_pick.parquet columns read
# What must agree for two jobs to be one model's results (anything else, e.g. the questions, may differ).
SETUP = ("placement", "control_system")


class NoRuns(ValueError):
    """No complete run below the given paths."""


@dataclass
class Run:
    """One complete job directory and what the report stamps about it."""
    path: Path
    summary: dict
    identity: dict

    @property
    def model(self) -> str:
        return self.summary.get("model", {}).get("model") or self.identity.get("model", {}).get("name", "model")

    @property
    def setup(self) -> tuple:
        """What the config decides and must agree for runs to be merged; what ran is compared apart (`ran`)."""
        s = self.summary
        m = s.get("model", {})
        return (self.model, m.get("path"), json.dumps(s.get("scoring"), sort_keys=True), *(s.get(k) for k in SETUP))

    @property
    def ran(self) -> dict:
        """What the model ran as (outputs.ran_stamp), from summary.json (older runs: from its model stamp)."""
        return self.summary.get("ran") or ran_stamp(self.summary.get("model") or {})

    def stamp(self) -> dict:
        s = self.summary
        keep = ("model", "ran", "config_id", "experiment", "role_set", "templates", "dataset", "placement", "scoring",
                "shard", "n_prompts", "n_questions", "n_roles", "throughput", "self_check", "packages")
        return {"path": str(self.path), **{k: s.get(k) for k in keep}}


@dataclass
class Results:
    """Per-model predictions (one row per prompt), the runs behind them, role facts and templates."""
    predictions: dict[str, pd.DataFrame]
    runs: dict[str, list[Run]]
    roles: pd.DataFrame
    templates: dict[str, str]
    perplexity: dict[str, pd.DataFrame] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. shards missing from a model's results
    self_pick: dict[str, pd.DataFrame] = field(default_factory=dict)  # question_id, subject, parsed, role (None: unparsed)

    @property
    def models(self) -> list[str]:
        return list(self.predictions)


def find_runs(paths: list) -> list[Path]:
    """Every complete job directory at or below the given paths, in a stable order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise NoRuns(f"{p} does not exist; give a run directory (with summary.json and predictions.parquet) "
                         f"or a folder above run directories (a multirun directory)")
        here = [p] if (p / SUMMARY).is_file() else sorted(s.parent for s in p.rglob(SUMMARY))
        runs = [d for d in here if (d / PREDICTIONS).is_file()]
        if not runs:
            raise NoRuns(f"no complete run in {p}: a complete run directory holds summary.json and "
                         f"predictions.parquet (an unfinished job has neither; its status.json says why)")
        found += [d for d in runs if d not in found]
    return found


def _read_predictions(path: Path) -> pd.DataFrame:
    names = set(pq.ParquetFile(path).schema_arrow.names)
    missing = [c for c in COLUMNS if c not in names and c != "split"]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; is it a persona-bench predictions.parquet?")
    df = pd.read_parquet(path, columns=[c for c in COLUMNS + GENERATION if c in names])
    if "split" not in df:
        df["split"] = None
    for col in ("scoring", "parse_rule"):
        if col in df:
            df[col] = df[col].astype("category")
    if "parsed" in df:
        df["parsed"] = df["parsed"].astype(bool)
        if "generation" in names:
            df["generation"] = _unparsed_texts(path, df)
    if "prompt" in names:  # the question as the model saw it: control rows only
        control = pd.read_parquet(path, columns=KEY[:2] + ["prompt"], filters=[("template", "==", CONTROL)])
        df = df.merge(control, on=KEY[:2], how="left")
    for col in ("interpersonal", "in_domain"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    df["correct"] = df["correct"].astype(bool)
    return df


def _unparsed_texts(path: Path, df: pd.DataFrame) -> pd.Series:
    """The generated text of the unparsed prompts (cut to EXAMPLE_CHARS), None for the parsed ones."""
    bad = pq.read_table(path, columns=KEY + ["generation"], filters=[("parsed", "==", False)]).to_pandas()
    out = pd.Series(None, index=df.index, dtype=object)
    if not len(bad):
        return out
    text = bad["generation"].astype(object).map(lambda t: t[:EXAMPLE_CHARS] if isinstance(t, str) else t)
    rows = df.index[~df["parsed"]]
    same = len(rows) == len(bad) and all(
        (df.loc[rows, k].astype(object).to_numpy() == bad[k].astype(object).to_numpy()).all() for k in KEY[:2])
    if same:  # the filtered read keeps the file's row order
        out.loc[rows] = text.to_numpy()
    else:
        keyed = df.loc[rows, KEY].reset_index().merge(bad[KEY].assign(generation=text), on=KEY, how="left")
        out.loc[keyed["index"]] = keyed["generation"].to_numpy()
    return out


def _read_self_pick(members: list["Run"]) -> pd.DataFrame | None:
    frames = []
    for r in members:
        f = r.path / SELF_PICK
        if f.is_file():
            names = set(pq.ParquetFile(f).schema_arrow.names)
            if not {"question_id", "role"} <= names:
                raise ValueError(f"{f} lacks question_id or role; is it a persona-bench self_pick.parquet?")
            frames.append(pd.read_parquet(f, columns=[c for c in SELF_PICK_READ if c in names]))
    if not frames:
        return None
    picks = pd.concat(frames, ignore_index=True).drop_duplicates("question_id", keep="first")
    picks["role"] = picks["role"].astype(object).where(picks["role"].notna(), None)
    if "parsed" not in picks:
        picks["parsed"] = picks["role"].notna()
    return picks.reset_index(drop=True)


def _role_facts(runs: list[Run]) -> pd.DataFrame:
    facts: dict[str, dict] = {}
    for run in runs:
        for r in run.identity.get("role_set", {}).get("roles", []) or []:
            facts.setdefault(r["name"], r)
    return pd.DataFrame(list(facts.values()))


def missing_shards(label: str, runs: list[Run]) -> list[str]:
    """A warning for each sharded job among `runs` (one model's) whose shards are not all complete:
    the shards are grouped by the whole job's id and their count, and the absent indices named."""
    jobs: dict[tuple, dict[int, Run]] = {}
    for run in runs:
        sh = run.summary.get("shard") or {}
        if sh.get("count", 1) > 1:
            jobs.setdefault((sh.get("whole_config_id"), sh["count"]), {})[sh["index"]] = run
    out = []
    for (whole, count), have in jobs.items():
        missing = sorted(set(range(count)) - set(have))
        if missing:
            n = sum(r.summary["shard"]["n_questions"] for r in have.values())
            total = next(iter(have.values())).summary["shard"].get("n_questions_total") or 0
            out.append(f"{label}: shard(s) {', '.join(map(str, missing))} of {count} of job {whole} are missing or "
                       f"unfinished; the results hold {len(have)} of its {count} shards ({n:,} of {total:,} questions)")
    return out


def split_by_ran(members: list[Run]) -> list[tuple[dict, list[Run]]]:
    """Runs of one set-up grouped by what ran: a run joins the first group whose known `ran` values all agree
    with its own (keys one of them lacks are not compared). (known values, runs) per group, in order."""
    groups: list[tuple[dict, list[Run]]] = []
    for run in members:
        ran = run.ran
        for known, runs in groups:
            if not ran_differences(known, ran):
                runs.append(run)
                known.update(ran)
                break
        else:
            groups.append((dict(ran), [run]))
    return groups


def _ran_split_warning(model: str, parts: list[tuple[str, dict, list[Run]]], keys: list[str]) -> str:
    def runs(rs: list[Run]) -> str:
        first = str(rs[0].path)
        return f"{len(rs)} run(s), e.g. {first}" if len(rs) > 1 else first

    def values(known: dict) -> str:
        return ", ".join(f"{k}={known.get(k, 'not recorded')}" for k in keys)

    groups = "; ".join(f"{label} = {values(known)} ({runs(rs)})" for label, known, rs in parts)
    return (f"{model}: runs of the same config ran differently ({', '.join(keys)}) and are NOT merged: {groups}. "
            "Each is analysed on its own; to merge them, rerun the odd ones as the others ran "
            "(model.dtype, model.revision=<commit>, device), or overwrite=true")


def load_runs(paths: list) -> Results:
    """Read every complete run below `paths` into one predictions table per model (see the module doc)."""
    dirs = find_runs(paths)
    runs = []
    for d in dirs:
        summary = json.loads((d / SUMMARY).read_text())
        job = d / JOB
        identity = json.loads(job.read_text()).get("identity", {}) if job.is_file() else {}
        runs.append(Run(d, summary, identity))
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.setup, []).append(run)
    names = [g[0] for g in groups]
    predictions, by_model, perplexity, self_pick = {}, {}, {}, {}
    warnings: list[str] = []
    templates: dict[str, str] = {}
    entries: list[tuple[str, list[Run]]] = []  # (label, runs merged as one) per set-up and what ran
    for setup, members in groups.items():
        label = setup[0] if names.count(setup[0]) == 1 else f"{setup[0]}-{members[0].summary.get('config_id')}"
        split = split_by_ran(members)
        if len(split) == 1:
            entries.append((label, members))
            continue
        differ = {d[0] for a, _ in split for b, _ in split for d in ran_differences(a, b)}
        keys = [k for k in RAN_KEYS if k in differ]
        parts = [(f"{label}-" + "-".join(str(known.get(k, "na"))[:12] for k in keys), known, rs) for known, rs in split]
        w = _ran_split_warning(setup[0], parts, keys)
        log.warning("%s", w)
        warnings.append(w)
        entries += [(part_label, rs) for part_label, _, rs in parts]
    seen: dict[str, int] = {}
    for label, members in entries:
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # the same values under two set-ups of one config id: keep both, never overwrite
            label = f"{label}-{seen[label]}"
        frames = [_read_predictions(r.path / PREDICTIONS) for r in members]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        dup = df.duplicated(KEY, keep=False)
        if dup.any():
            clash = df[dup].groupby(KEY, dropna=False)["pred"].nunique()
            if (clash > 1).any():
                log.warning("%s: %d prompts were scored differently by different runs; keeping the first",
                            label, int((clash > 1).sum()))
            df = df.drop_duplicates(KEY, keep="first").reset_index(drop=True)
        df["model"] = label
        predictions[label] = df
        by_model[label] = members
        for w in missing_shards(label, members):
            log.warning("%s", w)
            warnings.append(w)
        ppl = [pd.read_parquet(r.path / PERPLEXITY) for r in members if (r.path / PERPLEXITY).is_file()]
        if ppl:
            perplexity[label] = pd.concat(ppl, ignore_index=True).drop_duplicates(["template", "role"])
        picks = _read_self_pick(members)
        if picks is not None:
            self_pick[label] = picks
        for r in members:
            templates.update(r.summary.get("templates") or {})
    return Results(predictions, by_model, _role_facts(runs), templates, perplexity, warnings, self_pick)

