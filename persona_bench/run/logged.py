"""What a job (and a sweep's cross-run report) logs to an experiment tracker, as plain values: flat summary
keys (`group/metric`, as lm-evaluation-harness writes them), table rows and the config. No tracker calls
here (tracking.py makes them), so every value can be checked without W&B.

    config:   the job's config with the role catalogue cut to the roles it used, plus `resolved`: the values
              it actually ran with (dtype, scoring method and format, placement, revision, quantization,
              device kind, config id, shard), where the config may say `auto`
    summary:  accuracy/..., delta_vs_control/..., throughput/..., self_check/... (summary_metrics), and from
              the job's report the statistics: persona/<template>/<role>/{delta,ci_low,ci_high,p_adj},
              contrast/..., attribute/..., family/..., best_persona/..., power/... (report_metrics)
    per_role: one row per persona with its accuracy, difference to control, interval, p, corrected p,
              significance and equivalence verdict (per_role_rows, with_stats)
    a sweep:  <model>/accuracy/control, <model>/delta_vs_control/persona_mean ... per model, shards merged
              (sweep_metrics), and every cross-model table of report.json (report_tables)
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Optional

import pandas as pd

from persona_bench.config.schema import TrackingConfig
from persona_bench.outputs import CONTROL

if TYPE_CHECKING:
    from persona_bench.run.job import Job


def key_part(x) -> str:
    """A name as one part of a flat W&B key (no '/')."""
    return str(x).replace("/", "_")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _py(v):
    """A plain Python value for a W&B table cell (numpy scalars and NaN/NA become float/None)."""
    if v is None or (not isinstance(v, (str, list, dict)) and pd.isna(v)):
        return None
    return v.item() if hasattr(v, "item") else v


# ---------------------------------------------------------------- config

def resolved_values(summary: dict) -> dict:
    """The values a job actually ran with, from its summary.json: what the config may leave `auto`."""
    scoring = summary.get("scoring") or {}
    shard = summary.get("shard") or {}
    model = summary.get("model") or {}
    out = {**(summary.get("ran") or {}),  # dtype, revision, converted_sha256, quantization (applied), device kind
           "config_id": summary.get("config_id"), "scoring": scoring.get("method"), "format": scoring.get("format"),
           "placement": summary.get("placement"), "backend": model.get("backend"), "n_params": model.get("n_params"),
           "shard": {k: shard.get(k) for k in ("index", "count", "whole_config_id")} if shard else None}
    return {k: v for k, v in out.items() if v is not None}


def logged_config(job: "Job") -> dict:
    """The job's config as W&B records it: the role catalogue (162 roles in the paper's set) cut to the roles
    this job scored, and `resolved` with what is known before the model loads (config id, scoring method and
    format, shard); the runner adds the rest once the job is scored (resolved_values)."""
    cfg = job.cfg
    out = asdict(cfg)
    used = {r.name for r in job.roles}
    role_set = out.get("role_set") or {}
    catalogue = role_set.get("roles") or []
    role_set["roles"] = [r for r in catalogue if r.get("name") in used]
    role_set["n_catalogue"] = len(catalogue)
    subjects = {d for r in role_set["roles"] for d in [r.get("domain")] if d}
    role_set["domains"] = {k: v for k, v in (role_set.get("domains") or {}).items() if k in subjects}
    out["resolved"] = {"config_id": job.config_id, "scoring": job.method, "format": job.fmt,
                       "shard": {"index": cfg.shard.index, "count": cfg.shard.count}}
    return out


def job_labels(job: "Job") -> tuple[str, list[str]]:
    """The W&B job type and tags of a job's run: the model, experiment and template names and tracking.tags; a
    shard of a sharded job is tagged `shard` and `shard<i>of<n>`, and its job type is `shard` (unless
    tracking.job_type was changed), so a partial result is never taken for the model's whole one."""
    cfg = job.cfg
    tags = [cfg.model.name, cfg.experiment_name, *[t.name for t in job.templates], *cfg.tracking.tags]
    job_type = cfg.tracking.job_type
    if cfg.shard.count > 1:
        tags += ["shard", f"shard{cfg.shard.index}of{cfg.shard.count}"]
        if job_type == TrackingConfig.job_type:
            job_type = "shard"
    return job_type, tags


# ---------------------------------------------------------------- summary keys of one job

def summary_metrics(summary: dict) -> dict:
    """Flat W&B summary keys from a runner summary: accuracy/..., delta_vs_control/..., throughput/...,
    self_check/... (the numerical self-check against the reference path), shard/... for a shard, and for
    generated answers generation/... (parsed accuracy, parse failures, the logit answer)."""
    acc = summary.get("accuracy") or {}
    delta = summary.get("delta_vs_control") or {}
    out = {"accuracy/control": acc.get("control"), "accuracy/persona_mean": acc.get("persona_mean"),
           "delta_vs_control/persona_mean": delta.get("persona_mean")}
    for group in ("template", "category", "gender"):
        for name, v in (acc.get(group) or {}).items():
            out[f"accuracy/{group}/{key_part(name)}"] = v
        for name, v in (delta.get(group) or {}).items():
            out[f"delta_vs_control/{group}/{key_part(name)}"] = v
    for k, v in (summary.get("throughput") or {}).items():
        out[f"throughput/{key_part(k)}"] = v
    for k in ("n_prompts", "n_questions", "n_roles", "pred_top_share"):
        out[k] = summary.get(k)
    check = summary.get("self_check") or {}
    for k in ("agreement", "max_prob_diff", "mean_prob_diff", "n_compared"):
        out[f"self_check/{k}"] = check.get(k)
    shard = summary.get("shard") or {}
    if (shard.get("count") or 1) > 1:
        for k in ("index", "count", "n_questions", "n_questions_total"):
            out[f"shard/{k}"] = shard.get(k)
    gen = summary.get("generation") or {}  # scoring=generate: parsed accuracy, failures, logits on the same prompts
    for k, v in (gen.get("parsed_accuracy") or {}).items():
        out[f"generation/parsed_accuracy/{key_part(k)}"] = v
    failures = gen.get("parse_failure_rate") or {}
    for k in ("all", "control", "persona"):
        out[f"generation/parse_failure_rate/{k}"] = failures.get(k)
    for name, v in (failures.get("template") or {}).items():
        out[f"generation/parse_failure_rate/template/{key_part(name)}"] = v
    logit = gen.get("logit") or {}
    for k, v in (logit.get("accuracy") or {}).items():
        out[f"generation/logit_accuracy/{key_part(k)}"] = v
    out["generation/logit_agreement"] = logit.get("agreement")
    return {k: v for k, v in out.items() if _number(v)}


INTERVAL = ("ci_low", "ci_high", "p", "p_adj")


def _keys(prefix: str, row: dict, fields: tuple) -> dict:
    out = {f"{prefix}/{f}": row.get(f) for f in fields}
    out = {k: v for k, v in out.items() if _number(v) or isinstance(v, (bool, str))}
    return out


def report_metrics(analysis: dict) -> dict:
    """Flat W&B summary keys from one model's part of report.json (`per_model[model]`): every persona's
    difference to control with its interval and corrected p (persona/<template>/<role>/...), the persona mean
    and the contrasts (contrast/...), the attribute effects with their equivalence verdicts and minimum
    detectable effects (attribute/...), each family's count of significant and equivalent tests
    (family/...), the selection-aware best persona (best_persona/...) and the persona MDE (power/...)."""
    out: dict = {}
    for r in analysis.get("persona_effects") or []:
        # four keys a persona (2,600 for the paper's 649): what W&B's run table can set side by side across runs
        out.update(_keys(f"persona/{key_part(r.get('template'))}/{key_part(r.get('role'))}", r,
                         ("delta", "ci_low", "ci_high", "p_adj")))
    for r in analysis.get("contrasts") or []:
        name = re.sub(r"\s+", "", str(r.get("contrast")))
        out.update(_keys(f"contrast/{key_part(name)}", r, ("estimate", *INTERVAL, "significant")))
    power = analysis.get("power") or {}
    mde = {r.get("term"): r.get("mde") for r in power.get("attributes") or []}
    for r in (analysis.get("attributes") or {}).get("estimates") or []:
        out.update(_keys(f"attribute/{key_part(r.get('term'))}", {**r, "mde": mde.get(r.get("term"))},
                         ("estimate", *INTERVAL, "significant", "verdict", "mde")))
    for fam in analysis.get("families") or []:
        out.update(_keys(f"family/{fam.get('name')}", fam, ("n_tests", "n_significant", "n_equivalent")))
        for verdict, n in (fam.get("verdicts") or {}).items():
            out[f"family/{fam.get('name')}/verdict/{key_part(verdict)}"] = n
    best = analysis.get("best_persona") or {}
    out.update(_keys("best_persona", best, ("persona", "delta", "shrunken", "ci_low", "ci_high", "rank_ci_low",
                                            "rank_ci_high", "n_could_be_best")))
    out.update(_keys("power", power, ("persona_mde", "discordance", "power", "alpha")))
    out["n_boot"] = analysis.get("n_boot")
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------- the per-role table

PER_ROLE_COLUMNS = ["role", "template", "category", "gender", "domain", "interpersonal", "n", "accuracy",
                    "delta_vs_control"]
STAT_COLUMNS = ["ci_low", "ci_high", "p", "p_adj", "q_bh", "significant", "verdict", "n_better", "n_worse"]


def per_role_rows(pred: pd.DataFrame) -> list[list]:
    """One row per (role, template): attributes, n, accuracy, and accuracy minus the control's on the same questions."""
    control = pred[pred["template"] == CONTROL].groupby("question_id")["correct"].mean()
    persona = pred[pred["template"] != CONTROL]
    rows = []
    for (role, template), g in persona.groupby(["role", "template"], sort=True):
        first = g.iloc[0]
        same = g[g["question_id"].isin(control.index)]
        delta = (float(same["correct"].mean()) - float(control.loc[same["question_id"]].mean())) if len(same) else None
        rows.append([role, template, first.get("role_category"), first.get("gender"), first.get("domain"),
                     first.get("interpersonal"), int(len(g)), float(g["correct"].mean()), delta])
    return [[_py(v) for v in r] for r in rows]


def with_stats(rows: list[list], persona_effects: list[dict]) -> tuple[list[str], list[list]]:
    """The per-role table with the report's statistics as extra columns (STAT_COLUMNS: the paired bootstrap
    interval, the exact McNemar p, the p corrected in the persona family (Holm), the BH q, significance and the
    equivalence verdict); a persona the report does not list gets empty cells."""
    stats = {(r.get("role"), r.get("template")): r for r in persona_effects}
    out = [[*row, *(_py(stats.get((row[0], row[1]), {}).get(c)) for c in STAT_COLUMNS)] for row in rows]
    return PER_ROLE_COLUMNS + STAT_COLUMNS, out


# ---------------------------------------------------------------- a sweep's cross-run report

def sweep_metrics(doc: dict) -> dict:
    """Flat summary keys of a cross-run report.json, one group per model, with its shards and reruns merged
    (analysis.runs): <model>/accuracy/control, <model>/accuracy/persona_mean, <model>/delta_vs_control/
    persona_mean with its interval and p, the share of personas significantly better or worse, the best persona,
    and <model>/n_runs (the job directories merged: shards count one each)."""
    out: dict = {"n_models": len(doc.get("models") or [])}
    runs: dict = {}
    for stamp in (doc.get("meta") or {}).get("runs") or []:
        name = (stamp.get("model") or {}).get("model")
        runs[name] = runs.get(name, 0) + 1
    for r in (doc.get("cross_model") or {}).get("side_by_side") or []:
        m = key_part(r.get("model"))
        out.update({f"{m}/accuracy/control": r.get("control_accuracy"),
                    f"{m}/accuracy/persona_mean": r.get("persona_accuracy"),
                    f"{m}/n_questions": r.get("n_questions"), f"{m}/n_personas": r.get("n_personas"),
                    f"{m}/n_runs": runs.get(r.get("model"))})
        out.update(_keys(f"{m}/delta_vs_control/persona_mean", {**r, "estimate": r.get("delta")},
                         ("estimate", *INTERVAL, "significant")))
        out.update(_keys(m, r, ("n_significant_better", "n_significant_worse", "share_significant", "best_persona",
                                "best_shrunken")))
    return {k: v for k, v in out.items() if v is not None}


def table(records: list[dict], first: Optional[list[str]] = None) -> tuple[list[str], list[list]]:
    """Columns and rows of a report.json table (a list of records); `first` columns lead."""
    cols: list[str] = list(first or [])
    for r in records:
        cols += [c for c in r if c not in cols]
    return cols, [[_py(r.get(c)) for c in cols] for r in records]


def report_tables(doc: dict) -> dict[str, tuple[list[str], list[list]]]:
    """The cross-model tables of a report.json, by W&B key: the models side by side, their rank agreement, the
    role x model matrix of differences, and every persona and factor level of every model (a `model` column)."""
    cross = doc.get("cross_model") or {}
    out = {f"cross_model/{k}": table(cross[k]) for k in ("side_by_side", "rank_agreement", "role_model_delta")
           if cross.get(k)}
    per_model = doc.get("per_model") or {}
    personas = [{"model": m, **r} for m, a in per_model.items() for r in a.get("persona_effects") or []]
    if personas:
        out["per_role"] = table(personas, ["model", "role", "template"])
    levels = [{"model": m, **r} for m, a in per_model.items() for g in (a.get("groups") or {}).values() for r in g]
    if levels:
        out["factor_levels"] = table(levels, ["model", "factor", "level"])
    return out


def artifact_name(run_name: str, kind: str = "predictions") -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.' (at most 128 characters)."""
    return (f"{kind}-" + re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-."))[:128]
