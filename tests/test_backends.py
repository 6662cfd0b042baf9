"""The backend contract (backends/base.py): every backend satisfies it, the runner needs nothing else, and a
job's files follow the results schema (outputs.py) whatever the backend."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import dummy_cfg, tiny_cfg

from persona_bench.backends.base import Backend
from persona_bench.backends.dummy import DummyBackend
from persona_bench.backends.hf import HFBackend
from persona_bench.outputs import (
    GENERATION_COLUMNS,
    PERPLEXITY,
    PERPLEXITY_COLUMNS,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    SELF_PICK,
    SELF_PICK_COLUMNS,
    SUMMARY,
)
from persona_bench.run import run, steps
from persona_bench.run.setup import setup


def test_the_backends_satisfy_the_protocol(tiny_model_dir, tmp_path):
    assert isinstance(DummyBackend(), Backend)
    _, backend, _ = setup(tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path))
    assert isinstance(backend, HFBackend) and isinstance(backend, Backend)


@pytest.mark.parametrize("method,fmt", [("letter", "mmlu"), ("cloze", "cloze"), ("generate", "paper")])
def test_a_job_on_the_dummy_backend_writes_the_schema(tmp_path, method, fmt, monkeypatch):
    """Every column of predictions.parquet is in the schema (generation columns only when generating), and
    the after-run steps write theirs: the whole runner, store and steps without a model."""
    out = tmp_path / method
    cfg = dummy_cfg(out, scoring__method=method, scoring__format=fmt)
    cfg.report.enabled = cfg.report.self_pick = cfg.report.perplexity = True  # report.enabled: every step's switch
    monkeypatch.setattr(steps, "write_report", lambda *a, **k: {})  # the report itself: tests/test_report.py
    summary = run(cfg, DummyBackend(batch_tokens=300))
    df = pd.read_parquet(out / PREDICTIONS)
    want = PREDICTION_COLUMNS + (GENERATION_COLUMNS if method == "generate" else [])
    assert list(df.columns) == want
    assert summary["n_prompts"] == len(df) == 6 * 5 and json.loads((out / SUMMARY).read_text())["n_prompts"] == 30
    assert set(df["scoring"]) == {method} and df["pred"].between(0, 3).all()  # the dummy always answers
    assert list(pd.read_parquet(out / SELF_PICK).columns) == SELF_PICK_COLUMNS
    assert list(pd.read_parquet(out / PERPLEXITY).columns) == PERPLEXITY_COLUMNS


def test_the_dummy_backend_is_deterministic_whatever_the_batch():
    """What makes it a fair stand-in for resume tests: a request's result does not depend on its batch-mates."""
    from persona_bench.scoring.requests import Request

    reqs = [Request(list(range(i, i + 5)), label_ids=[7, 8, 9, 10], option_ids=[[1, 2], [3], [4, 5, 6]])
            for i in range(6)]
    b = DummyBackend()
    whole = b.score(reqs, "letter", 100)
    alone = [b.score([r], "letter", 100)[0] for r in reqs]
    assert whole == alone
    assert b.score(reqs[::-1], "cloze", 100) == b.score(reqs, "cloze", 100)[::-1]


def test_a_sweep_reuses_the_loaded_model_for_jobs_that_load_the_same_weights(tiny_model_dir, tmp_path, monkeypatch):
    """run.py turns keep_loaded on in a sweep: the next job with the same model, device and options takes the loaded
    backend (and its results equal a fresh load's); another model first lets go of the kept one."""
    import contextlib
    import gc
    import weakref

    from persona_bench import backends
    from persona_bench.run import runner

    loads = []
    real_load = HFBackend.load.__func__
    monkeypatch.setattr(HFBackend, "load", classmethod(lambda cls, *a, **k: loads.append(a[0].name) or real_load(cls, *a, **k)))
    llama = tiny_model_dir("llama")
    backends.keep_loaded()
    try:
        run(tiny_cfg(llama, "llama", tmp_path / "a"))
        first = weakref.ref(backends._kept["backend"])
        summary = run(tiny_cfg(llama, "llama", tmp_path / "b", scoring__method="letter"))
        assert loads == ["tiny_llama"] and summary["model"]["reused"] is True
        opt = tiny_cfg(tiny_model_dir("opt"), "opt", tmp_path / "c")
        backends.load_backend(opt, "cloze")
        gc.collect()
        assert loads == ["tiny_llama", "tiny_opt"] and first() is None  # the llama was let go before the opt loaded

        @contextlib.contextmanager
        def one_of_several_gpus(device, holder=""):
            yield "cpu"  # as models.gpus.claim_device yields cuda:<i> for device=auto on a machine with several GPUs

        monkeypatch.setattr(runner, "claim_device", one_of_several_gpus)
        run(tiny_cfg(llama, "llama", tmp_path / "d", device="auto"))
        assert backends._kept["backend"] is None  # the claim ended with the job: nothing stays on that GPU
    finally:
        backends.keep_loaded(False)
    assert backends._kept["backend"] is None
    run(tiny_cfg(llama, "llama", tmp_path / "fresh", scoring__method="letter"))
    assert loads == ["tiny_llama", "tiny_opt", "tiny_llama", "tiny_llama"]  # off: every job loads its own
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b" / PREDICTIONS),
                                  pd.read_parquet(tmp_path / "fresh" / PREDICTIONS))
