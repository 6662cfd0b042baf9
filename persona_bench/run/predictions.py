"""What a finished job writes: one predictions row per prompt (outputs.PREDICTION_COLUMNS) and its
summary.json (accuracies, the stamps that make it reproducible, throughput)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Optional

import pandas as pd

from persona_bench.analysis.summary import accuracy_summary
from persona_bench.config.job_id import config_id
from persona_bench.inputs.questions import data_hash
from persona_bench.outputs import ran_stamp
from persona_bench.run.items import Item, prompt_hash
from persona_bench.run.job import package_versions
from persona_bench.scoring.parse import parse_answer
from persona_bench.scoring.requests import Result

if TYPE_CHECKING:
    from persona_bench.run.job import Job


def prediction_rows(job: "Job", items: list[Item], results: list[Result]) -> pd.DataFrame:
    """One row per prompt. method=generate adds the generated text and what the parser read from it:
    pred is the parsed option (-1 when none: it counts wrong, as in the paper), logit_pred the labels'
    logit answer at the first generated position of the same prompt (-1 when the labels are not single
    tokens)."""
    recs = []
    for it, res in zip(items, results):
        q, role = it.question, it.role
        extra = {}
        pred = res.pred
        if job.method == "generate":
            parsed = parse_answer(res.generation or "", it.labels, it.options)
            extra = {"generation": res.generation, "n_new_tokens": res.n_new_tokens, "parsed": parsed.parsed,
                     "parse_rule": parsed.rule, "logit_pred": res.pred, "logit_correct": res.pred == q.answer}
            pred = parsed.index if parsed.parsed else -1
        recs.append({
            "model": job.cfg.model.name,
            "question_id": q.id,
            "subject": q.subject,
            "template": it.template.name,
            "role": role.name if role else None,
            "role_category": role.category if role else None,
            "gender": role.gender if role else None,
            "domain": role.domain if role else None,
            "interpersonal": role.interpersonal if role else None,
            "in_domain": (q.subject in role.subjects) if role else None,
            "placement": job.placement,
            "scoring": job.method,
            "format": job.fmt,
            "prompt": it.prompt,
            "prompt_hash": prompt_hash(it.prompt),
            "n_prompt_tokens": len(it.request.prompt_ids),
            "choices": it.choices,
            "n_choices": len(it.choices),
            "scores": res.scores,
            "label_probs": res.probs,
            "label_mass": res.label_mass,
            "option_logprob_sum": res.logprob_sum,
            "option_n_tokens": res.n_tokens,
            "pred": pred,
            "answer": q.answer,
            "correct": pred == q.answer,
            "split": q.meta.get("split"),
            **extra,
        })
    return pd.DataFrame.from_records(recs)


def job_summary(job: "Job", model_info: dict, df: pd.DataFrame, timing: dict,
                self_check: Optional[dict] = None) -> dict:
    """summary.json: what ran (model, data, templates, scoring, shard, packages) and what it measured, with
    the numerical self-check (run.self_check; None when scoring.self_check=0)."""
    cfg, questions = job.cfg, job.questions
    return {
        "model": model_info,
        "ran": ran_stamp(model_info),  # what the model ran as (job.json holds the same block)
        "config_id": config_id(cfg),
        "experiment": cfg.experiment_name,
        "role_set": cfg.role_set.name,
        "templates": {t.name: t.text for t in job.templates},
        "dataset": {"name": cfg.dataset.name, "source": cfg.dataset.source, "sample": cfg.dataset.sample,
                    "n_questions": len(questions), "data_hash": data_hash(questions)},
        "placement": job.placement,
        "control_system": cfg.model.control_system,
        "scoring": {"method": job.method, "format": job.fmt, "cloze_score": cfg.scoring.cloze_score,
                    **({"generate": asdict(cfg.scoring.generate)} if job.method == "generate" else {})},
        "shard": {"index": cfg.shard.index, "count": cfg.shard.count, "n_questions": len(questions),
                  "n_questions_total": getattr(questions, "n_total", len(questions)),
                  "whole_config_id": config_id(cfg, shard=False)},
        **accuracy_summary(df, cfg.scoring.collapse_warning, job.method),
        "throughput": timing,
        "self_check": self_check,
        "packages": package_versions(),
    }
