"""The results schema: what a run folder holds, the columns of its predictions, the control's name, and
how its files are written. Every reader and writer of run folders uses these names.

    <run>/                      one job (outputs/<experiment>/<model>-<config id>[-shard<i>of<n>]/)
      job.json                  the job's identity (config_id and the config keys that decide results) and what
                                ran (`ran`: resolved dtype, revision, weights hash, quantization, device kind)
      .lock                     held (flock) while a process runs the job
      parts/part-*.parquet      one file per scored batch (with its checksum), until the job completes
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
    """Write to a temporary name, flush it to disk, then rename: a reader never sees a partial file, and a
    machine that crashes right after the rename does not leave an empty file behind it."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))


# What actually ran, besides the config: job.json's and summary.json's `ran` block. Results depend on each.
RAN_KEYS = ("dtype", "revision", "converted_sha256", "quantization", "device")


def ran_stamp(model: dict) -> dict:
    """The `ran` block from a loaded model's info (summary.json's `model`): the resolved dtype (never `auto`), the
    revision (a hub model's commit hash; for the embedded GGUF, the GGUF's sha256), the hash of the GGUF's
    converted weights, the quantization actually applied and the device kind (cpu, cuda). Keys with no value
    (a local model has no revision) are left out."""
    device = model.get("device")
    out = {"dtype": model.get("dtype"), "revision": model.get("gguf_sha256") or model.get("revision"),
           "converted_sha256": model.get("converted_sha256"), "quantization": model.get("quantization"),
           "device": str(device).split(":")[0] if device else None}
    return {k: v for k, v in out.items() if v is not None}


def ran_differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, value in a, value in b) for each `ran` key that both record with different values; a key that one
    of them lacks (recorded by an older version, or not known there) is not compared."""
    return [(k, a[k], b[k]) for k in RAN_KEYS if k in a and k in b and a[k] != b[k]]
