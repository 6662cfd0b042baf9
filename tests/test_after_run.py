"""The steps after a job's results (run/steps.py): report.enabled=false turns every one off (the model's
own persona pick, persona perplexity, the report); when on, each of the first two has its own switch."""

from __future__ import annotations

import pytest
from helpers import dummy_cfg

from persona_bench.backends.dummy import DummyBackend
from persona_bench.outputs import PERPLEXITY, PREDICTIONS, REPORT_DIR, SELF_PICK
from persona_bench.run import run, steps


@pytest.fixture
def reports(monkeypatch) -> list:
    """The report step's calls (the report itself is tests/test_report.py's)."""
    calls = []
    monkeypatch.setattr(steps, "write_report", lambda paths, out, *a, **k: calls.append(out) or {})
    return calls


@pytest.mark.parametrize("enabled,self_pick,perplexity", [(False, True, True), (True, True, True),
                                                          (True, False, True), (True, True, False)])
def test_report_enabled_switches_every_step_and_each_step_its_own(tmp_path, reports, enabled, self_pick, perplexity):
    out = tmp_path / "job"
    cfg = dummy_cfg(out)
    cfg.report.enabled, cfg.report.self_pick, cfg.report.perplexity = enabled, self_pick, perplexity
    run(cfg, DummyBackend())
    assert (out / PREDICTIONS).is_file()
    assert (out / SELF_PICK).is_file() == (enabled and self_pick)
    assert (out / PERPLEXITY).is_file() == (enabled and perplexity)
    assert reports == ([out / REPORT_DIR] if enabled else [])
