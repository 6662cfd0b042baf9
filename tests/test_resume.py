"""Crash-safe, exact resume; out-of-memory splitting; one job per directory.

In-process tests run the real runner and store on the deterministic dummy backend (no checkpoint) and
interrupt it at a chosen batch; the slow tests kill a real `run.py` on the embedded model with SIGKILL
and SIGTERM and rerun the same command.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import ROOT, dummy_cfg

from persona_bench.backends.dummy import DummyBackend
from persona_bench.config.errors import ConfigError
from persona_bench.run.runner import Interrupted, run
from persona_bench.run.store import JobStore


def predictions(out):
    return pd.read_parquet(out / "predictions.parquet")


def cfg_for(out, **over):
    return dummy_cfg(out, scoring__method="cloze", scoring__format="cloze", **over)


def backend(**kw):
    kw.setdefault("batch_tokens", 200)  # several batches on the small grid
    return DummyBackend(**kw)


@pytest.fixture
def reference(tmp_path):
    out = tmp_path / "reference"
    run(cfg_for(out), backend())
    return predictions(out)


def interrupt_after(monkeypatch, n_batches, exc):
    """Make JobStore.save raise `exc` after n_batches saved batches (as a signal would arrive)."""
    real, count = JobStore.save, {"n": 0}

    def save(self, *args):
        if count["n"] == n_batches:
            raise exc
        count["n"] += 1
        real(self, *args)

    monkeypatch.setattr(JobStore, "save", save)
    return count


@pytest.mark.parametrize("exc", [Interrupted(signal.SIGTERM), RuntimeError("the machine went away")])
def test_interrupted_job_resumes_to_exactly_the_uninterrupted_result(tmp_path, monkeypatch, reference, exc):
    out = tmp_path / "job"
    cfg = cfg_for(out)
    interrupt_after(monkeypatch, 3, exc)
    with pytest.raises(type(exc)):
        run(cfg, backend())
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == ("interrupted" if isinstance(exc, Interrupted) else "failed")
    assert status["n_saved"] == sum(len(pd.read_parquet(p)) for p in (out / "parts").glob("part-*.parquet")) > 0
    assert not (out / "predictions.parquet").exists() and not (out / "summary.json").exists()

    monkeypatch.undo()
    again = backend()
    summary = run(cfg_for(out), again)
    assert sum(again.calls) == len(reference) - status["n_saved"]  # nothing finished is recomputed
    assert summary["throughput"]["prompts_resumed"] == status["n_saved"]
    pd.testing.assert_frame_equal(predictions(out), reference)  # none lost, none duplicated, same numbers
    assert not (out / "parts").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "complete"


def test_complete_job_is_not_rerun_unless_overwrite(tmp_path, reference, caplog):
    out = tmp_path / "job"
    run(cfg_for(out), backend())
    before = (out / "predictions.parquet").stat().st_mtime_ns
    idle = backend()
    with caplog.at_level("INFO"):
        summary = run(cfg_for(out), idle)
    assert "already complete" in caplog.text and summary["n_prompts"] == len(reference)
    assert idle.calls == [] and (out / "predictions.parquet").stat().st_mtime_ns == before
    run(cfg_for(out, overwrite=True), backend())
    assert (out / "predictions.parquet").stat().st_mtime_ns > before
    pd.testing.assert_frame_equal(predictions(out), reference)


def test_resume_with_another_batch_budget_keeps_every_prompt_once(tmp_path, monkeypatch, reference):
    out = tmp_path / "job"
    interrupt_after(monkeypatch, 2, Interrupted(signal.SIGINT))
    with pytest.raises(Interrupted):
        run(cfg_for(out), backend())
    monkeypatch.undo()
    run(cfg_for(out, model__batch_tokens=10_000), backend(batch_tokens=10_000))  # the budget is not part of the job's identity
    df = predictions(out)
    assert list(df.question_id + df.template + df.role.fillna("")) == list(
        reference.question_id + reference.template + reference.role.fillna(""))
    assert (df.pred == reference.pred).all()
    for a, b in zip(df.label_probs, reference.label_probs):
        assert list(a) == pytest.approx(list(b), abs=1e-12)


def test_another_config_in_the_same_directory_is_refused(tmp_path, reference):
    out = tmp_path / "job"
    run(cfg_for(out), backend())
    with pytest.raises(ConfigError, match=r"holds results of another config .*differing keys: .*role_set\.names"):
        run(cfg_for(out, role_set__names=["doctor"]), backend())


def test_a_directory_in_use_is_refused(tmp_path):
    out = tmp_path / "job"
    cfg = cfg_for(out)
    holder = JobStore(out)
    holder.open(cfg)
    try:
        with pytest.raises(ConfigError, match="in use by another running process"):
            run(cfg, backend())
    finally:
        holder.close()


def test_out_of_memory_splits_the_batch_and_loses_nothing(tmp_path, reference, caplog):
    out = tmp_path / "job"
    oom = backend(batch_tokens=10_000, oom_rows=2)  # any batch of more than 2 prompts runs out of memory
    with caplog.at_level("WARNING"):
        summary = run(cfg_for(out), oom)
    assert "out of memory on a batch" in caplog.text
    calls = oom.calls
    assert max(calls) > 2 and summary["throughput"]["batch_tokens"] < 10_000
    df = predictions(out)
    assert len(df) == len(reference) and (df.pred == reference.pred).all()
    ooms = [i for i, n in enumerate(calls) if n > 2]
    assert len(ooms) <= 5 and len(calls) - ooms[-1] > 5  # the budget adapts once, then holds for the rest of the job


def test_an_oom_on_a_single_prompt_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not fit in memory"):
        run(cfg_for(tmp_path / "job"), backend(batch_tokens=1, oom_rows=0))


# -- real run.py processes, killed and rerun ---------------------------------------------------------------
COMMAND = ["debug=tiny", "tracking=none", "model.batch_tokens=400",  # 30 prompts in about 15 batches
           "report.enabled=false", "report.perplexity=false", "scoring.self_check=0"]


def start(cwd, *args):
    """run.py with COMMAND and `args` (flags such as -m first), in `cwd`: its outputs/ and multirun/ go there."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY")}
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *flags, *COMMAND, *overrides], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def job_dir(cwd):
    dirs = list((cwd / "outputs" / "demo").glob("gemma3_270m-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def wait_for_parts(cwd, n, proc):
    while proc.poll() is None:
        parts = list((cwd / "outputs").glob("demo/*/parts/part-*.parquet"))
        if len(parts) >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"run.py ended before {n} batches were saved: {proc.stdout.read()[-3000:]}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("uninterrupted")
    proc = start(cwd)
    assert proc.wait() == 0, proc.stdout.read()[-3000:]
    return predictions(job_dir(cwd))


def saved_rows(job) -> int:
    return sum(len(pd.read_parquet(p)) for p in (job / "parts").glob("part-*.parquet"))


@pytest.mark.slow
def test_killed_run_py_continues_with_the_same_command(tmp_path, uninterrupted):
    """Stopped by SIGTERM (a clean stop: the status and the message say so), then, while continuing, by SIGKILL
    (no chance to clean up): the same command finishes the job with the predictions of an uninterrupted run."""
    proc = start(tmp_path)
    wait_for_parts(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 128 + signal.SIGTERM
    log = proc.stdout.read()
    job = job_dir(tmp_path)
    assert not (job / "predictions.parquet").exists()
    n_saved = saved_rows(job)
    assert 0 < n_saved < len(uninterrupted)
    assert "run the same command again to continue" in log and "Traceback" not in log
    assert json.loads((job / "status.json").read_text())["state"] == "interrupted"

    killed = start(tmp_path)
    n_parts = len(list((job / "parts").glob("part-*.parquet")))
    wait_for_parts(tmp_path, n_parts + 2, killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert f"resuming: {n_saved} of {len(uninterrupted)} prompts" in killed.stdout.read()
    assert not (job / "predictions.parquet").exists()
    n_killed = saved_rows(job)
    assert n_saved < n_killed < len(uninterrupted)

    again = start(tmp_path)
    assert again.wait() == 0
    assert f"resuming: {n_killed} of {len(uninterrupted)} prompts" in again.stdout.read()
    pd.testing.assert_frame_equal(predictions(job), uninterrupted)

    third = start(tmp_path)
    assert third.wait() == 0 and "already complete" in third.stdout.read()


@pytest.mark.slow
def test_sweep_with_a_broken_job_finishes_the_others_and_names_it(tmp_path):
    proc = start(tmp_path, "-m", "role_set.names=[doctor],[no_such_role]")
    code, log = proc.wait(), proc.stdout.read()
    assert code == 1, log[-3000:]
    sweep = tmp_path / "multirun" / "demo"
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert len(status["jobs"]) == 2 and len(status["failed"]) == 1
    failed = status["jobs"][status["failed"][0]]
    assert "no_such_role" in failed["reason"]
    assert "1 of 2 jobs did not complete" in log and "no_such_role" in log
    ok = [j for j in status["jobs"] if j not in status["failed"]]
    df = predictions(sweep / ok[0])
    assert set(df.role.dropna()) == {"doctor"}
