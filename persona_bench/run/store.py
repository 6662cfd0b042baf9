"""A job's results on disk, written so that a crash or an interruption loses no finished work.

    <output_dir>/
      job.json              the job's identity (config_id and the config keys that decide results)
      .lock                 held (flock) while a process runs the job; the kernel frees it on any exit
      parts/part-*.parquet  one file per scored batch: item index, prompt hash, scores (write, then rename)
      predictions.parquet   every row, consolidated when the last batch is done; parts are then removed
      summary.json          the run's summary, written last: its presence means the job is complete
      status.json           running | interrupted | failed | complete, with the reason and counts

Rerunning the same job reads the parts, checks that each saved result belongs to the same prompt
(index and prompt hash), and scores only what is missing: nothing finished is recomputed, lost
or duplicated. A SIGKILL loses at most the batch in flight.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import pandas as pd

from persona_bench.config.errors import ConfigError
from persona_bench.config.job_id import config_id, job_identity
from persona_bench.outputs import (
    JOB,
    LOCK,
    PARTS,
    PREDICTIONS,
    RESULT_FILES,
    STATUS,
    SUMMARY,
    write_atomic,
    write_json,
)
from persona_bench.scoring.requests import Result

log = logging.getLogger(__name__)



def record_status(out, state: str, **info) -> None:
    """<out>/status.json: running | interrupted | failed | complete, when, and why."""
    write_json(Path(out) / STATUS, {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info})


class JobStore:
    """The output directory of one job: identity, lock, incremental parts, final results."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.parts = self.out / PARTS
        self._lock_fd: Optional[int] = None

    # -- setup ---------------------------------------------------------------------------------
    def open(self, cfg) -> None:
        """Create the directory, take the lock, and check it holds this job (or nothing)."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.parts.mkdir(exist_ok=True)
        except OSError as e:
            raise ConfigError(f"output_dir={self.out} cannot be created: {e.strerror or e}") from None
        if not os.access(self.out, os.W_OK):
            raise ConfigError(f"output_dir={self.out} is not writable")
        fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"output_dir={self.out} is in use by another running process; "
                              "wait for it, or give this job another output_dir") from None
        self._lock_fd = fd
        ident = {"config_id": config_id(cfg), "identity": job_identity(cfg)}
        job = self.out / JOB
        if cfg.overwrite:
            self.reset()
        elif job.exists():
            saved = json.loads(job.read_text())
            if saved.get("config_id") != ident["config_id"]:
                diff = _differences(saved.get("identity", {}), ident["identity"])
                raise ConfigError(
                    f"output_dir={self.out} holds results of another config (job {saved.get('config_id')}, "
                    f"this one is {ident['config_id']}; differing keys: {', '.join(diff) or 'unknown'}). "
                    "Use another output_dir, or overwrite=true to replace them")
        elif any(self.out.joinpath(f).exists() for f in RESULT_FILES) or any(self.parts.iterdir()):
            raise ConfigError(f"output_dir={self.out} holds results with no job.json (not made by this version); "
                              "use another output_dir, or overwrite=true to replace them")
        write_json(job, ident)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def reset(self) -> None:
        """overwrite=true: remove previous results of this directory."""
        for f in (*RESULT_FILES, STATUS, JOB):
            (self.out / f).unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)
        self.parts.mkdir()

    # -- state ---------------------------------------------------------------------------------
    def complete(self) -> Optional[dict]:
        """The saved summary when the job has finished, else None."""
        s = self.out / SUMMARY
        if s.exists() and (self.out / PREDICTIONS).exists():
            return json.loads(s.read_text())
        return None

    def status(self, state: str, **info) -> None:
        record_status(self.out, state, **info)

    # -- incremental results -------------------------------------------------------------------
    def save(self, index: list[int], hashes: list[str], results: list[Result]) -> None:
        """One scored batch as one part file (atomic): index and prompt hash identify each result."""
        df = pd.DataFrame({
            "i": index,
            "prompt_hash": hashes,
            "scores": [r.scores for r in results],
            "probs": [r.probs for r in results],
            "label_mass": [r.label_mass for r in results],
            "logprob_sum": [r.logprob_sum for r in results],
            "n_tokens": [r.n_tokens for r in results],
            "generation": [r.generation for r in results],
            "n_new_tokens": [r.n_new_tokens for r in results],
        })
        path = self.parts / f"part-{min(index):08d}.parquet"
        write_atomic(path, lambda p: df.to_parquet(p, index=False))

    def load(self, hashes: list[str]) -> dict[int, Result]:
        """Results saved by earlier attempts, checked against this job's prompts (by index and hash)."""
        done: dict[int, Result] = {}
        for path in sorted(self.parts.glob("part-*.parquet")):
            df = pd.read_parquet(path)
            for rec in df.itertuples(index=False):
                i = int(rec.i)
                if i >= len(hashes) or hashes[i] != rec.prompt_hash:
                    raise ConfigError(
                        f"{path} holds a result for prompt {i} that this job does not have (its prompts changed, "
                        "e.g. a new persona_bench version); rerun with overwrite=true to start over")
                if i in done:
                    continue
                done[i] = Result(
                    scores=list(rec.scores), probs=list(rec.probs),
                    label_mass=None if pd.isna(rec.label_mass) else float(rec.label_mass),
                    logprob_sum=None if rec.logprob_sum is None else list(rec.logprob_sum),
                    n_tokens=None if rec.n_tokens is None else [int(x) for x in rec.n_tokens],
                    generation=getattr(rec, "generation", None),
                    n_new_tokens=None if pd.isna(getattr(rec, "n_new_tokens", None)) else int(rec.n_new_tokens),
                )
        return done

    def finish(self, predictions: pd.DataFrame, summary: dict) -> None:
        """Consolidate: predictions first, summary last (its presence marks completion), then drop parts."""
        write_atomic(self.out / PREDICTIONS, lambda p: predictions.to_parquet(p, index=False))
        write_json(self.out / SUMMARY, summary)
        self.status("complete", n_prompts=len(predictions))
        shutil.rmtree(self.parts, ignore_errors=True)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out
