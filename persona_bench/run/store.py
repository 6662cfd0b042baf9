"""A job's results on disk, written so that a crash or an interruption loses no finished work.

    <output_dir>/
      job.json              the job's identity (config_id and the config keys that decide results), and
                            `ran`: what the model that scored the parts actually ran as (outputs.ran_stamp)
      .lock                 held (flock) while a process runs the job; the kernel frees it on any exit
      parts/part-*.parquet  one file per scored batch: item index, prompt hash, scores (write, then rename),
                            and in its metadata the sha256 of its rows; parts/corrupt/: the unreadable ones
      predictions.parquet   every row, consolidated when the last batch is done; parts are then removed
      summary.json          the run's summary, written last: its presence means the job is complete
      status.json           running | interrupted | failed | complete, with the reason and counts

Rerunning the same job reads the parts, checks that each saved result belongs to the same prompt
(index and prompt hash), and scores only what is missing: nothing finished is recomputed, lost
or duplicated. A SIGKILL loses at most the batch in flight. A part that cannot be read or whose
rows do not match its checksum (a crash mid-write on a filesystem that lost it, a bad disk) is moved
to parts/corrupt/ with a warning and its prompts are scored again. Parts saved by a model that ran
otherwise (another resolved dtype, revision, weights, quantization or device kind: check_ran) are
never mixed with new ones: the job is refused, naming both values.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
    ran_differences,
    write_atomic,
    write_json,
)
from persona_bench.scoring.requests import Result

log = logging.getLogger(__name__)

CORRUPT = "corrupt"  # parts/corrupt/: parts that could not be read or failed their checksum
CHECKSUM_KEY = b"persona_bench.checksum"  # a part's parquet metadata: {"sha256": ..., "n_rows": ...}
# How to continue as an earlier attempt ran, per `ran` key (outputs.ran_stamp); None: no config key sets it.
RAN_FIX = {"dtype": "model.dtype={}", "device": "device={}", "quantization": "model.quantization={}",
           "revision": "model.revision={}", "converted_sha256": None}


def record_status(out, state: str, **info) -> None:
    """<out>/status.json: running | interrupted | failed | complete, when, and why."""
    write_json(Path(out) / STATUS, {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info})


def _write_in_place(path: Path, text: str) -> None:
    """A small write without a temporary file (the fallback when the atomic write fails)."""
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def record_end(out, state: str, cause: BaseException, **info) -> bool:
    """Record how a job ended (failed, interrupted) while `cause` is being handled; never raises, so `cause`
    stays the error the job ends with. When status.json cannot be written (disk full, unwritable folder): log
    `cause` first, then why, and try a small write in place; when that fails too, remove status.json, so that
    no stale `running` claims a job in progress. True when the state was recorded."""
    path = Path(out) / STATUS
    try:
        record_status(out, state, **info)
        return True
    except Exception as e:  # noqa: BLE001 - whatever failed, the job's own error must stay the one reported
        log.error("job %s: %s: %s", state, type(cause).__name__, cause)
        log.error("could not record it in %s (%s: %s)", path, type(e).__name__, e)
    try:
        _write_in_place(path, json.dumps({"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "reason": info.get("reason") or f"{type(cause).__name__}: {cause}"},
                                         default=str))
        return True
    except Exception as e:  # noqa: BLE001
        log.error("could not write %s in place either (%s: %s); removing it so that it does not claim the job "
                  "is running", path, type(e).__name__, e)
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.error("could not remove %s (%s): it may still say `running`", path, e)
    return False


def _plain(x):
    """A saved value in one canonical form (numpy -> Python, NaN -> None), so that a checksum computed on what
    was saved equals the one computed on what is read back."""
    if hasattr(x, "tolist"):  # numpy arrays and scalars, tensors
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float):
        return None if math.isnan(x) else x
    return x


def part_checksum(index, hashes, results: list[Result]) -> str:
    """sha256 of a part's rows: prompt index, prompt hash and every field of its result, in order."""
    h = hashlib.sha256()
    for i, ph, r in zip(index, hashes, results):
        row = [int(i), ph, r.scores, r.probs, r.label_mass, r.logprob_sum, r.n_tokens, r.generation, r.n_new_tokens]
        h.update(json.dumps(_plain(row)).encode())
        h.update(b"\n")
    return h.hexdigest()


class CorruptPart(Exception):
    """A part that cannot be read, or whose rows do not match its checksum."""


class JobStore:
    """The output directory of one job: identity, lock, incremental parts, final results."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.parts = self.out / PARTS
        self._lock_fd: Optional[int] = None

    # -- setup ---------------------------------------------------------------------------------
    def open(self, cfg) -> None:
        """Check that the directory holds this job (or nothing) before creating anything in it; then create it,
        take the lock, and check again under the lock (another process may have written it meanwhile)."""
        ident = {"config_id": config_id(cfg), "identity": job_identity(cfg)}
        if not cfg.overwrite:
            self._check_holds(ident)
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
        job = self.out / JOB
        if cfg.overwrite:
            self.reset()
        else:
            self._check_holds(ident)
        write_json(job, {**ident, **self._ran_block()})

    def _check_holds(self, ident: dict) -> None:
        """The directory holds this job's results or none: its job.json names this config, or, without a
        job.json, it holds no results either. Creates nothing."""
        job = self.out / JOB
        if job.exists():
            saved = json.loads(job.read_text())
            if saved.get("config_id") != ident["config_id"]:
                diff = _differences(saved.get("identity", {}), ident["identity"])
                raise ConfigError(
                    f"output_dir={self.out} holds results of another config (job {saved.get('config_id')}, "
                    f"this one is {ident['config_id']}; differing keys: {', '.join(diff) or 'unknown'}). "
                    "Use another output_dir, or overwrite=true to replace them")
        elif any(self.out.joinpath(f).exists() for f in RESULT_FILES) or (
                self.parts.is_dir() and any(self.parts.iterdir())):
            raise ConfigError(f"output_dir={self.out} holds results with no job.json (not made by this version); "
                              "use another output_dir, or overwrite=true to replace them")

    def _ran_block(self) -> dict:
        """{"ran": ...} as job.json holds it (what an earlier attempt ran), or {}."""
        try:
            ran = json.loads((self.out / JOB).read_text()).get("ran")
        except (OSError, ValueError, AttributeError):
            return {}
        return {"ran": ran} if isinstance(ran, dict) else {}

    def check_ran(self, ran: dict) -> None:
        """Record what this attempt runs (job.json's `ran`, outputs.ran_stamp) once the model is loaded and
        before any part is saved. When an earlier attempt saved parts with another value of any key, refuse:
        the results must be a function of what ran, not of which attempt scored which prompt."""
        job = self.out / JOB
        saved = json.loads(job.read_text())
        before = saved.get("ran")
        n_parts = sum(1 for _ in self.parts.glob("part-*.parquet"))
        if n_parts and isinstance(before, dict):
            diff = ran_differences(before, ran)
            if diff:
                source = (saved.get("identity", {}).get("model") or {}).get("source")
                fix = [RAN_FIX[k].format(a) for k, a, _ in diff
                       if RAN_FIX.get(k) and (k != "revision" or source == "hub")]
                raise ConfigError(
                    f"output_dir={self.out} holds {n_parts} batch(es) scored by an earlier attempt that ran "
                    "otherwise: " + "; ".join(f"{k} {a} then, {b} now" for k, a, b in diff) +
                    ". Mixing them would make the results depend on which attempt scored which prompt. Continue as "
                    "it ran" + (f" ({', '.join(fix)})" if fix else "") + ", or start over with overwrite=true")
            ran = {**before, **ran}
        elif n_parts:
            log.warning("the %d batch(es) saved by an earlier attempt do not record what ran (an earlier version); "
                        "continuing as %s", n_parts, ", ".join(f"{k}={v}" for k, v in ran.items()))
        write_json(job, {**saved, "ran": ran})

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
        """One scored batch as one part file (atomic): index and prompt hash identify each result; the sha256 of
        its rows (part_checksum) is in the file's metadata."""
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
        table = pa.Table.from_pandas(df, preserve_index=False)
        check = json.dumps({"sha256": part_checksum(index, hashes, results), "n_rows": len(df)}).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), CHECKSUM_KEY: check})
        path = self.parts / f"part-{min(index):08d}.parquet"
        write_atomic(path, lambda p: pq.write_table(table, p))

    def load(self, hashes: list[str]) -> dict[int, Result]:
        """Results saved by earlier attempts, checked against this job's prompts (by index and hash). A part
        that cannot be read or fails its checksum is moved to parts/corrupt/ (a warning names it): its
        prompts are missing from the answer, so they are scored again."""
        done: dict[int, Result] = {}
        for path in sorted(self.parts.glob("part-*.parquet")):
            try:
                rows = _read_part(path)
            except CorruptPart as e:
                self._set_aside(path, str(e))
                continue
            for i, prompt, result in rows:
                if i >= len(hashes) or hashes[i] != prompt:
                    raise ConfigError(
                        f"{path} holds a result for prompt {i} that this job does not have (its prompts changed, "
                        "e.g. a new persona_bench version); rerun with overwrite=true to start over")
                done.setdefault(i, result)
        return done

    def _set_aside(self, path: Path, why: str) -> None:
        dest_dir = self.parts / CORRUPT
        dest, n = dest_dir / path.name, 1
        try:
            dest_dir.mkdir(exist_ok=True)
            while dest.exists():
                dest, n = dest_dir / f"{path.stem}.{n}{path.suffix}", n + 1
            os.replace(path, dest)
        except OSError as e:
            raise ConfigError(f"{path} {why}, and it cannot be moved aside ({e.strerror or e}); delete it and run "
                              "the same command again: its prompts will be scored again") from None
        log.warning("%s %s: moved to %s; its prompts are scored again", path, why, dest)

    def finish(self, predictions: pd.DataFrame, summary: dict) -> None:
        """Consolidate: predictions first, summary last (its presence marks completion), then drop parts."""
        write_atomic(self.out / PREDICTIONS, lambda p: predictions.to_parquet(p, index=False))
        write_json(self.out / SUMMARY, summary)
        self.status("complete", n_prompts=len(predictions))
        shutil.rmtree(self.parts, ignore_errors=True)


def _read_part(path: Path) -> list[tuple[int, str, Result]]:
    """(prompt index, prompt hash, result) per row of a part; CorruptPart when it cannot be read or its rows do
    not match the checksum saved with it (a part written before checksums existed is not checked)."""
    try:
        table = pq.read_table(path)
        df = table.to_pandas()
        out = []
        for rec in df.itertuples(index=False):
            out.append((int(rec.i), rec.prompt_hash, Result(
                scores=list(rec.scores), probs=list(rec.probs),
                label_mass=None if pd.isna(rec.label_mass) else float(rec.label_mass),
                logprob_sum=None if rec.logprob_sum is None else list(rec.logprob_sum),
                n_tokens=None if rec.n_tokens is None else [int(x) for x in rec.n_tokens],
                generation=getattr(rec, "generation", None),
                n_new_tokens=None if pd.isna(getattr(rec, "n_new_tokens", None)) else int(rec.n_new_tokens),
            )))
        saved = (table.schema.metadata or {}).get(CHECKSUM_KEY)
        check = json.loads(saved) if saved is not None else None
        if check is not None and not isinstance(check, dict):
            raise ValueError(f"its checksum metadata is not an object: {saved[:80]!r}")
    except Exception as e:  # noqa: BLE001 - a damaged file raises anything: ArrowInvalid, OSError, KeyError ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CorruptPart(f"cannot be read ({type(e).__name__}: {first[:200]})") from None
    if check is not None:
        got = part_checksum(*zip(*out)) if out else hashlib.sha256().hexdigest()
        if got != check.get("sha256") or len(out) != check.get("n_rows"):
            raise CorruptPart(f"does not match its checksum ({len(out)} rows, sha256 {got[:12]}..., saved "
                              f"{check.get('n_rows')} rows, {str(check.get('sha256'))[:12]}...)")
    return out


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out
