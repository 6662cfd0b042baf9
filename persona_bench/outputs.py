"""The results schema: what a run folder holds, the columns of its predictions, the control's name, and
how its files are written. Every reader and writer of run folders uses these names.

    <run>/                      one job (outputs/<experiment>/<model>-<config id>[-shard<i>of<n>]/)
      job.json                  the job's identity (config_id and the config keys that decide results)
      .lock                     held (flock) while a process runs the job
      parts/part-*.parquet      one file per scored batch, until the job completes
      predictions.parquet       one row per prompt (PREDICTION_COLUMNS)
      summary.json              the run's summary, written last: its presence marks a complete job
      status.json               running | interrupted | failed | complete, with the reason and counts
      self_pick.parquet         the model's own persona pick per question (SELF_PICK_COLUMNS)
      perplexity.parquet        each persona sentence's perplexity under the model (PERPLEXITY_COLUMNS)
      report/                   report.json, report.html, figures/*.png
    <sweep>/sweep_status.json   every job of a sweep and the failed ones
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

JOB = "job.json"
LOCK = ".lock"
PARTS = "parts"
PREDICTIONS = "predictions.parquet"
SUMMARY = "summary.json"
STATUS = "status.json"
SELF_PICK = "self_pick.parquet"
PERPLEXITY = "perplexity.parquet"
REPORT_DIR = "report"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
SWEEP_STATUS = "sweep_status.json"
RESULT_FILES = (PREDICTIONS, SUMMARY)  # a job is complete when both exist

CONTROL = "control"  # the template (and persona) name of the no-persona prompt

# One row of predictions.parquet per prompt. Generation runs add GENERATION_COLUMNS.
PREDICTION_COLUMNS = [
    "model", "question_id", "subject", "template", "role", "role_category", "gender", "domain", "interpersonal",
    "in_domain", "placement", "scoring", "format", "prompt", "prompt_hash", "n_prompt_tokens", "choices", "n_choices",
    "scores", "label_probs", "label_mass", "option_logprob_sum", "option_n_tokens", "pred", "answer", "correct", "split",
]
GENERATION_COLUMNS = ["generation", "n_new_tokens", "parsed", "parse_rule", "logit_pred", "logit_correct"]
KEY = ["question_id", "template", "role"]  # one prompt of a model's grid
SELF_PICK_COLUMNS = ["question_id", "subject", "prompt", "generation", "parsed", "parse_rule", "role"]
PERPLEXITY_COLUMNS = ["template", "role", "text", "n_tokens", "nll_mean", "perplexity"]


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a temporary name, then rename: a reader never sees a partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))
