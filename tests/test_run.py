"""Whole runs: the runner on tiny local models, and run.py on the embedded model in a subprocess."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from helpers import ROOT, tiny_cfg

from persona_bench.run.runner import run

COLUMNS = {"model", "question_id", "subject", "role", "role_category", "gender", "template", "placement", "prompt",
           "scoring", "label_probs", "choices", "pred", "answer", "correct"}


def read(out):
    return pd.read_parquet(out / "predictions.parquet"), json.loads((out / "summary.json").read_text())


def test_chat_model_run_writes_every_prompt_with_persona_in_the_system_turn(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir("llama", "system"), "llama", tmp_path, scoring__method="letter", scoring__format="mmlu")
    summary = run(cfg)
    df, saved = read(tmp_path)
    assert COLUMNS <= set(df.columns)
    assert len(df) == 6 * (1 + 2 * 2) == summary["n_prompts"] == saved["n_prompts"]
    assert set(df["placement"]) == {"system"}
    doctor = df[(df.role == "doctor") & (df.template == "speaker")].iloc[0]
    assert doctor.prompt.startswith("<|system|>\nYou are a doctor.<|end|>\n<|user|>\nThe following are")
    control = df[df.template == "control"]
    assert control.role.isna().all() and not control.prompt.str.contains("<\\|system\\|>").any()
    assert all(abs(sum(p) - 1) < 1e-6 for p in df.label_probs)
    assert (df.correct == (df.pred == df.answer)).all()
    assert saved["accuracy"]["control"] == pytest.approx(control.correct.mean())
    assert set(saved["accuracy"]["template"]) == {"control", "speaker", "audience"}
    assert set(saved["accuracy"]["role"]) == {"doctor", "friend"}
    assert sum(saved["pred_histogram"].values()) == len(df)
    for key in ("data_hash", "n_questions"):
        assert key in saved["dataset"]
    for key in ("revision", "dtype", "quantization", "n_params"):
        assert key in saved["model"]
    assert saved["packages"]["torch"] and saved["throughput"]["prompts_per_s"] > 0


@pytest.mark.parametrize("arch,method", [("opt", "cloze"), ("t5", "letter"), ("t5", "cloze"), ("llama", "cloze")])
def test_results_do_not_depend_on_batch_size(tiny_model_dir, tmp_path, arch, method):
    runs = []
    for budget in (16, 100_000):
        out = tmp_path / str(budget)
        cfg = tiny_cfg(tiny_model_dir(arch), arch, out, model__batch_tokens=budget, scoring__method=method,
                       scoring__format="mmlu" if method == "letter" else "cloze")
        run(cfg)
        runs.append(read(out)[0])
    a, b = runs
    assert (a.question_id == b.question_id).all() and (a.role.fillna("") == b.role.fillna("")).all()
    assert (a.pred == b.pred).all()
    for pa, pb in zip(a.label_probs, b.label_probs):
        assert list(pa) == pytest.approx(list(pb), abs=1e-5)
    assert set(a.placement) == {"plain"}


@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_quantized_run_on_cpu(tiny_model_dir, tmp_path, quant):
    """The layers really are bitsandbytes layers, counted at load and recorded: every linear layer but the output
    layer (which bitsandbytes keeps in full precision), in fewer bytes than the fp32 weights."""
    pytest.importorskip("bitsandbytes")
    cfg = tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path, model__quantization=quant, scoring__method="letter",
                   scoring__format="mmlu", scoring__self_check_min=4)
    summary = run(cfg)
    m = summary["model"]
    assert m["quantization"] == m["quantization_requested"] == quant and summary["n_prompts"] == 30
    assert m["quantized_layers"] > 0 and m["quantized_layers"] == m["linear_layers"] - 1 == 14
    assert m["n_params"] == 176_448  # the parameters the layers stand for (4-bit packs two in a byte)
    assert m["weight_bytes"] < 0.75 * 4 * m["n_params"]  # fp32: 4 bytes a parameter
    assert summary["self_check"]["path"] == f"{quant} (bitsandbytes), batch 1, unpadded"


def test_quantization_skipped_at_load_fails_with_a_clear_message(tiny_model_dir, tmp_path, monkeypatch):
    """A BitsAndBytesConfig that never reaches from_pretrained (here: replaced by None) loads the model in full
    precision; the load counts no bitsandbytes layer and stops, instead of recording 4bit."""
    pytest.importorskip("bitsandbytes")
    import persona_bench.models.loading as loading
    from persona_bench.config import ConfigError

    monkeypatch.setattr(loading, "quantization_config", lambda cfg, dtype: None)
    cfg = tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path, model__quantization="4bit", scoring__method="letter",
                   scoring__format="mmlu")
    with pytest.raises(ConfigError, match=r"model.quantization=4bit was asked for tiny_llama .*0 of its 15 linear "
                                          r"layers are quantized.*or run it with model.quantization=none"):
        run(cfg)
    assert not (tmp_path / "predictions.parquet").exists()


def test_quantized_layers_are_known_by_class_name_without_bitsandbytes():
    from persona_bench.models.quantization import layer_quantization

    fake4 = type("Linear4bit", (torch.nn.Linear,), {})(64, 64)
    fake8 = type("Linear8bitLt", (torch.nn.Linear,), {})(64, 64)
    assert layer_quantization(fake4, {}) == "4bit" and layer_quantization(fake8, {}) == "8bit"
    assert layer_quantization(torch.nn.Linear(64, 64), {}) is None


def run_py(*args, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY")}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_bad_value_exits_nonzero_with_one_message(tmp_path):
    p = run_py("model.batch_tokens=-1", f"hydra.run.dir={tmp_path}/r")
    assert p.returncode == 2
    assert "model.batch_tokens=-1 must be a positive number of tokens" in p.stderr + p.stdout
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "r" / "predictions.parquet").exists()


@pytest.mark.slow
def test_run_py_on_the_embedded_model(tmp_path):
    p = run_py("debug=tiny", f"hydra.run.dir={tmp_path}/r")
    assert p.returncode == 0, p.stderr[-3000:]
    df, summary = read(tmp_path / "r")
    assert len(df) == 6 * (1 + 2 * 2) and set(df.scoring) == {"cloze"} and set(df.placement) == {"plain"}
    assert all(len(c) == 4 and c[0].startswith(" ") for c in df.choices)
    assert summary["model"]["model"] == "gemma3_270m" and summary["model"]["gguf_sha256"]
    assert (tmp_path / "r" / ".hydra" / "config.yaml").exists() and (tmp_path / "r" / "run.log").exists()
    # the optional outputs: each persona sentence's perplexity under the model, and the job's report
    ppl = pd.read_parquet(tmp_path / "r" / "perplexity.parquet")
    assert len(ppl) == 4 and set(ppl.text) >= {"You are a doctor.", "You are talking to a friend."}
    assert ppl.perplexity.between(1, 1e6).all() and (ppl.n_tokens >= 4).all()
    doc = json.loads((tmp_path / "r" / "report" / "report.json").read_text())
    assert doc["models"] == ["gemma3_270m"] and (tmp_path / "r" / "report" / "report.html").is_file()
    assert "log_perplexity" in {c["measure"] for c in doc["per_model"]["gemma3_270m"]["correlations"]}
    picks = pd.read_parquet(tmp_path / "r" / "self_pick.parquet")  # the model's own persona pick, per question
    assert len(picks) == 6 and set(picks["role"].dropna()) <= {"doctor", "friend"}


@pytest.mark.slow
def test_run_py_generates_on_the_embedded_model(tmp_path):
    p = run_py("debug=tiny", "scoring=generate", "scoring.generate.max_new_tokens=6", "report.perplexity=false",
               f"hydra.run.dir={tmp_path}/r")
    assert p.returncode == 0, p.stderr[-3000:]
    df, summary = read(tmp_path / "r")
    assert len(df) == 30 and set(df.scoring) == {"generate"} and set(df.format) == {"paper"}
    assert df.prompt.str.contains(" Options: 1. ", regex=False).all() and df.prompt.str.endswith(".\nAnswer:").all()
    assert (df.n_new_tokens <= 6).all() and df.generation.str.len().gt(0).all()
    # Gemma writes " 2" as a space then "2": the labels' logits are read after the space, so every row
    # has a logit answer on its own prompt; the base model answers with a number, which the parser reads.
    assert df.logit_pred.between(0, 3).all()
    assert df.parsed.mean() >= 0.5 and (df.pred[df.parsed] == df.logit_pred[df.parsed]).mean() >= 0.5
    gen = summary["generation"]
    assert 0 <= gen["parse_failure_rate"]["all"] <= 0.5 and gen["logit"]["agreement"] is not None
    doc = json.loads((tmp_path / "r" / "report" / "report.json").read_text())
    assert doc["per_model"]["gemma3_270m"]["generation"]["n_prompts"] == 30
    assert any(r["kind"] == "same prompts" for r in doc["cross_model"]["logit_vs_generation"])


@pytest.mark.slow
def test_multirun_sweep_in_a_subprocess(tmp_path):
    p = run_py("-m", "debug=tiny", "scoring=cloze,letter", "role_set.names=[doctor]", "report.enabled=false",
               "scoring.self_check=0", f"hydra.sweep.dir={tmp_path}/s")
    assert p.returncode == 0, p.stderr[-3000:]
    # the second job takes the weights the first loaded (backends.keep_loaded): one load for the sweep
    assert (p.stdout + p.stderr).count("loaded gemma3_270m:") == 1
    assert "model gemma3_270m: the weights an earlier job of this sweep loaded" in p.stdout + p.stderr
    jobs = sorted((tmp_path / "s").glob("gemma3_270m-*"))  # one directory per job, named by its config
    assert len(jobs) == 2
    methods = {json.loads((j / "summary.json").read_text())["scoring"]["method"] for j in jobs}
    assert methods == {"cloze", "letter"}
    assert json.loads((tmp_path / "s" / "sweep_status.json").read_text())["failed"] == []


@pytest.mark.slow
def test_dry_run_plans_the_paper_study_for_three_models(tmp_path):
    p = run_py("-m", "model=flan,llama2,opt", "experiment=paper", "dry_run=true", f"hydra.sweep.dir={tmp_path}/s")
    assert p.returncode == 0, p.stderr[-3000:]
    plans = [line for line in p.stdout.splitlines() if line.startswith("[plan]")]
    assert len(plans) == 3
    for name, line in zip(("flan", "llama2", "opt"), plans):
        assert line.startswith(f"[plan] {name} ") and "1,564,090 prompts" in line and "GiB" in line
    assert p.stdout.count("per persona (exact McNemar, 648 tests): ") == 3  # the power lines (analysis/power.py)
    assert "domain_match=in-domain" in p.stdout
    assert not list((tmp_path / "s").rglob("predictions.parquet"))


def test_same_config_gives_identical_predictions(tiny_model_dir, tmp_path):
    frames = []
    for i in range(2):
        cfg = tiny_cfg(tiny_model_dir("llama", "no_system"), "llama", tmp_path / str(i), scoring__method="letter",
                       scoring__format="paper")
        run(cfg)
        frames.append(read(tmp_path / str(i))[0])
    assert set(frames[0].placement) == {"user"}  # the template rejects a system turn: persona in the user turn
    pd.testing.assert_frame_equal(frames[0], frames[1])
