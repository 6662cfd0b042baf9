"""The numerical self-check (run/self_check.py): a seeded sample of a run's prompts re-scored one at a time on
an independent reference path (scoring/reference.py, models/reference.py) and compared with the run's results;
recorded in summary.json and shown in the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import compose_cfg, dummy_cfg, override, tiny_cfg

import persona_bench.models.reference as models_reference
import persona_bench.scoring.cloze as cloze
import persona_bench.scoring.letter as letter
from persona_bench.backends.dummy import DummyBackend
from persona_bench.config import ConfigError, config_id
from persona_bench.config.validate import validate
from persona_bench.models.fastpath import unfused
from persona_bench.outputs import PREDICTIONS, SUMMARY
from persona_bench.report import Options, write_report
from persona_bench.run import run
from persona_bench.run.self_check import sample, sample_size
from persona_bench.run.setup import setup


def fmt(method: str) -> str:
    return "mmlu" if method == "letter" else "cloze"


def summary_of(out) -> dict:
    return json.loads((out / SUMMARY).read_text())


@pytest.mark.parametrize("arch,method", [("llama", "letter"), ("llama", "cloze"), ("t5", "letter"), ("t5", "cloze")])
def test_fp32_runs_agree_with_the_reference_path(tiny_model_dir, tmp_path, arch, method):
    """Batched, padded (and, for causal cloze, packed) scores equal one-prompt-at-a-time plain forward passes."""
    cfg = tiny_cfg(tiny_model_dir(arch), arch, tmp_path, scoring__method=method, scoring__format=fmt(method),
                   scoring__self_check_min=12, model__batch_tokens=300)  # several padded batches
    run(cfg)
    sc = summary_of(tmp_path)["self_check"]
    assert sc["n"] == sc["n_compared"] == 12 and sc["method"] == method
    assert sc["path"] == "fp32, batch 1, unpadded" and sc["dtype_run"] == "fp32" and sc["dtype_reference"] == "fp32"
    assert sc["agreement"] == 1.0 and sc["max_prob_diff"] < 1e-4


def test_a_generate_run_checks_its_logit_answer(tiny_model_dir, tmp_path):
    """Generated text is not re-generated; the labels' logits at the first generated position are checked."""
    cfg = tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path, scoring__method="generate", scoring__format="paper",
                   scoring__self_check_min=8)
    cfg.scoring.generate.max_new_tokens = 3
    sc = run(cfg)["self_check"]
    assert sc["method"] == "letter" and sc["n_compared"] == 8
    assert sc["agreement"] == 1.0 and sc["max_prob_diff"] < 1e-4


@pytest.mark.parametrize("method", ["letter", "cloze"])
def test_a_broken_scoring_path_fails_the_self_check(tiny_model_dir, tmp_path, monkeypatch, method):
    """A bug in the run's fast path (here: the output layer's logits shifted towards later options) shows as
    disagreement: the reference path does not share it."""
    module = letter if method == "letter" else cloze
    real = module.head_logits

    def shifted(model, hidden, ids, *args, **kw):
        picked, logz = real(model, hidden, ids, *args, **kw)
        return picked + 3.0 * torch.arange(picked.shape[1], device=picked.device), logz

    monkeypatch.setattr(module, "head_logits", shifted)
    cfg = tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path, scoring__method=method, scoring__format=fmt(method),
                   scoring__self_check_min=12)
    run(cfg)
    sc = summary_of(tmp_path)["self_check"]
    assert sc["n"] == 12 and sc["agreement"] < 0.75 and sc["max_prob_diff"] > 0.3


def test_a_bf16_run_is_checked_against_an_fp32_copy_or_says_why_not(tiny_model_dir, tmp_path, monkeypatch):
    _, backend, items = setup(tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path, model__dtype="bf16",
                                       scoring__method="letter", scoring__format="mmlu"))
    reqs = [it.request for it in items[:6]]
    run_results = backend.score(reqs, "letter", 10_000)
    ref = backend.reference(reqs, "letter")
    assert ref.dtype == "fp32" and ref.path == "fp32, batch 1, unpadded" and "fp32 copy" in ref.note
    assert next(backend.model.parameters()).dtype == torch.bfloat16  # the run's model is left as it was
    diffs = [max(abs(a - b) for a, b in zip(x.probs, y.probs)) for x, y in zip(run_results, ref.results)]
    assert 0 < max(diffs) < 0.05  # bf16 against fp32: small, but not zero
    monkeypatch.setattr(models_reference, "free_bytes", lambda device: 0)  # no memory for a copy
    ref = backend.reference(reqs, "letter")
    assert ref.dtype == "bf16" and ref.path == "bf16, batch 1, unpadded" and "GB free" in ref.note


def test_the_reference_path_runs_without_the_fused_norms_and_puts_them_back(tiny_model_dir, tmp_path):
    _, backend, _ = setup(tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path))
    fused = lambda: sum("forward" in m.__dict__ for m in backend.model.modules())  # noqa: E731
    n = fused()
    assert n == backend.info["fused_norms"] > 0
    with unfused(backend.model):
        assert fused() == 0
    assert fused() == n


@pytest.mark.parametrize("method,fmt_", [("letter", "mmlu"), ("cloze", "cloze"), ("generate", "paper")])
def test_the_dummy_backend_records_full_agreement(tmp_path, method, fmt_):
    summary = run(dummy_cfg(tmp_path, scoring__method=method, scoring__format=fmt_), DummyBackend())
    sc = summary["self_check"]
    assert sc == summary_of(tmp_path)["self_check"]
    assert sc["n"] == 30 and sc["agreement"] == 1.0 and sc["max_prob_diff"] == 0.0  # 30 prompts < 50: all
    assert sc["method"] == ("letter" if method == "generate" else method)  # generate: the labels' logit answer


def test_the_sample_is_a_seeded_share_with_a_floor():
    assert sample_size(3536, 0.02, 50) == 71 and sample_size(884, 0.02, 50) == 50 and sample_size(30, 0.02, 50) == 30
    assert sample_size(1000, 0.0, 50) == 0 and sample_size(1000, 1.0, 50) == 1000
    a, b = sample(3536, 71, seed=0), sample(3536, 71, seed=0)
    assert a == b and len(set(a)) == 71 and a != sample(3536, 71, seed=1)


def test_the_switch_at_zero_turns_it_off_and_no_prediction_changes(tmp_path):
    class Counting(DummyBackend):
        asked = 0

        def reference(self, requests, method):
            Counting.asked += len(requests)
            return super().reference(requests, method)

    on, off = tmp_path / "on", tmp_path / "off"
    cfg_on = dummy_cfg(on, scoring__self_check=0.2, scoring__self_check_min=2)
    cfg_off = dummy_cfg(off, scoring__self_check=0.0)
    assert config_id(cfg_on) == config_id(cfg_off)  # not part of the job's identity
    assert run(cfg_on, Counting())["self_check"]["n"] == Counting.asked == 6  # 20% of 30
    assert run(cfg_off, Counting())["self_check"] is None and Counting.asked == 6
    assert summary_of(off)["self_check"] is None
    pd.testing.assert_frame_equal(pd.read_parquet(on / PREDICTIONS), pd.read_parquet(off / PREDICTIONS))


def test_a_backend_without_a_reference_path_or_a_failing_one_is_recorded(tmp_path):
    class NoReference(DummyBackend):
        def reference(self, requests, method):
            return None

    class Failing(DummyBackend):
        def reference(self, requests, method):
            raise RuntimeError("out of memory at batch 1")

    sc = run(dummy_cfg(tmp_path / "none"), NoReference(name="stub"))["self_check"]
    assert sc["agreement"] is None and sc["path"].startswith("not available")
    summary = run(dummy_cfg(tmp_path / "fail"), Failing())  # the run itself completes
    assert summary["n_prompts"] == 30 and summary["self_check"]["path"] == "failed"
    assert "out of memory at batch 1" in summary["self_check"]["error"]


def test_the_switch_is_validated_and_the_demo_keeps_its_id():
    assert config_id(compose_cfg([])) == "7c73b78a"
    assert config_id(compose_cfg(["scoring.self_check=0.5", "scoring.self_check_min=5"])) == "7c73b78a"
    for share in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"scoring.self_check=.* must be a share of the prompts in \[0, 1\]"):
            validate(override(compose_cfg([]), scoring__self_check=share))
    with pytest.raises(ConfigError, match="scoring.self_check_min=-1"):
        validate(override(compose_cfg([]), scoring__self_check_min=-1))


def test_the_report_shows_the_noise_floor(tmp_path):
    run(dummy_cfg(tmp_path), DummyBackend())
    write_report([tmp_path], tmp_path / "report", Options(n_boot=20, similarity=False))
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Numerical noise floor" in page and "the same answer on 100.0%" in page
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["meta"]["runs"][0]["self_check"]["agreement"] == 1.0


@pytest.mark.parametrize("window", [4, 64])
def test_the_cloze_reference_equals_one_pass_per_option(window):
    """The reference encodes the prompt once, continues each option from a copy of the model's own KV
    cache and puts every predicting state through the output layer together: the same log-likelihoods
    as one plain forward pass over prompt + option per option (fp32), also where Gemma 3's
    sliding-window layers see fewer positions than prompt + option has; its letter scores are the
    model's own last-position logits."""
    from test_scoring import _random_requests, _tiny_gemma3

    from persona_bench.scoring.reference import reference_one

    model = _tiny_gemma3(window)
    for r in _random_requests(6, seed=3):
        got = reference_one(model, r, "causal", "cloze", "sum").logprob_sum
        with torch.inference_mode():
            want = [torch.log_softmax(model(input_ids=torch.tensor([r.prompt_ids + o[:-1]])).logits[0, -len(o):].float(), -1)
                    .gather(1, torch.tensor(o).unsqueeze(1)).sum().item() for o in r.option_ids]
        assert got == pytest.approx(want, abs=1e-4, rel=1e-5)
        r.label_ids = [5, 17, 40, 91]
        letter = reference_one(model, r, "causal", "letter")
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([r.prompt_ids])).logits[0, -1].float()
        assert letter.scores == pytest.approx(logits[r.label_ids].tolist(), abs=1e-4, rel=1e-5)
