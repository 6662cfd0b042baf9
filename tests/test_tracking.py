"""W&B tracking: what an offline run records, mode resolution without a reachable server,
failures that must stay warnings, and redaction of secrets. No network; wandb's config, cache
and data directories live under tmp_path."""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pandas as pd
import pytest

wandb = pytest.importorskip("wandb")

from wandb_records import read_wandb_offline  # noqa: E402  (tests/ is on sys.path: conftest.py)

from persona_bench.analysis.summary import accuracy_summary  # noqa: E402
from persona_bench.config.schema import TrackingConfig  # noqa: E402
from persona_bench.run.logged import STAT_COLUMNS  # noqa: E402
from persona_bench.run.redaction import REDACTED, redact, secret_name  # noqa: E402
from persona_bench.run.tracking import (  # noqa: E402
    PER_ROLE_COLUMNS,
    RUN_ID_FILE,
    Tracker,
    WandbTracker,
    artifact_name,
    make_tracker,
    resolve_mode,
    run_target,
)

FAKE_KEY = "fake0wandb0key0" + "x" * 25  # the shape of a W&B key; never valid
HF_SECRET = "hf_FAKEtokenVALUE1234567890"
LOGGER = "persona_bench.run.tracking"


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """wandb's own files under tmp_path; no mode, key, host or netrc from the user's environment."""
    for name in ("config", "cache", "data", "dir"):
        (tmp_path / f"wandb-{name}").mkdir()
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_PROJECT",
                "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    wandb.teardown()  # wandb reads the environment once per process: start from a fresh setup
    yield tmp_path
    wandb.teardown()


def predictions() -> pd.DataFrame:
    """4 questions x (control, speaker/doctor, speaker/friend, audience/doctor), in the runner's schema."""
    correct = {
        ("control", None): [1, 1, 0, 0],  # 0.5
        ("speaker", "doctor"): [1, 1, 1, 0],  # 0.75, +0.25
        ("speaker", "friend"): [1, 1, 0, 0],  # 0.5, 0
        ("audience", "doctor"): [0, 0, 0, 0],  # 0, -0.5
    }
    attrs = {"doctor": ("occupation", "neutral", "medicine", False), "friend": ("social", "neutral", None, True)}
    recs = []
    for (template, role), marks in correct.items():
        cat, gender, domain, inter = attrs.get(role, (None, None, None, None))
        for i, c in enumerate(marks):
            recs.append({"model": "tiny", "question_id": f"q{i}", "subject": "anatomy", "template": template,
                         "role": role, "role_category": cat, "gender": gender, "domain": domain,
                         "interpersonal": inter, "pred": 0 if c else 1, "answer": 0, "n_choices": 4,
                         "correct": bool(c)})
    return pd.DataFrame.from_records(recs)


def write_results(out: Path) -> tuple[dict, pd.DataFrame]:
    df = predictions()
    summary = {**accuracy_summary(df), "throughput": {"prompts_per_s": 12.5, "tokens_per_s": 900.0, "device": "cpu"},
               "ran": {"dtype": "bf16", "revision": "0123abcd", "quantization": "none", "device": "cpu"}}
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "predictions.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary))
    return summary, df


def offline_dirs(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*"))


def records(run_dir: Path) -> dict:
    """The run's records once wandb has written them all: run.finish() can return before wandb-core
    flushes the .wandb file (it flushes every 15 s and when its stream closes); teardown closes it."""
    wandb.teardown()
    return read_wandb_offline(run_dir)


def test_offline_run_records_summary_config_table_and_artifact(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # present but unused offline: must not be written anywhere
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    monkeypatch.setattr(sys, "argv", ["run.py", f"+note={HF_SECRET}"])  # wandb records argv
    out = wandb_env / "job"
    summary, df = write_results(out)
    config = {"model": {"name": "tiny", "batch_tokens": 4096}, "hf_token": "typed-in-secret",
              "dataset": {"path": f"https://user:{HF_SECRET}@example.org/mmlu"}}
    run_name = "tiny/speaker demo:1"
    tracker = WandbTracker(TrackingConfig(backend="wandb", mode="offline", project="pb-test"))
    tracker.start(config, out, run_name, "sweep-a", ["tiny", "demo"], job_type="benchmark")
    assert tracker.mode == "offline" and tracker.run is not None
    tracker.log_results(summary, df, out)
    tracker.finish(ok=True)

    (run_dir,) = offline_dirs(out)
    rec = records(run_dir)
    s = rec["summary"]
    assert s["accuracy/control"] == pytest.approx(0.5)
    assert s["accuracy/persona_mean"] == pytest.approx(5 / 12)
    assert s["accuracy/template/speaker"] == pytest.approx(0.625)
    assert s["delta_vs_control/template/speaker"] == pytest.approx(0.125)
    assert s["delta_vs_control/template/audience"] == pytest.approx(-0.5)
    assert s["accuracy/category/occupation"] == pytest.approx(0.375)
    assert s["delta_vs_control/category/occupation"] == pytest.approx(-0.125)
    assert s["delta_vs_control/gender/neutral"] == pytest.approx(5 / 12 - 0.5, abs=1e-5)
    assert s["throughput/prompts_per_s"] == 12.5 and "throughput/device" not in s
    assert s["n_prompts"] == 16

    assert rec["config"]["model"] == {"name": "tiny", "batch_tokens": 4096}
    assert rec["config"]["resolved"] == summary["ran"]  # the resolved values, beside the config's `auto`
    assert rec["config"]["hf_token"] == REDACTED
    assert rec["config"]["dataset"]["path"] == f"https://user:{REDACTED}@example.org/mmlu"
    assert rec["run"]["group"] == "sweep-a" and rec["run"]["tags"] == ["tiny", "demo"]
    assert rec["run"]["job_type"] == "benchmark" and rec["run"]["name"] == run_name
    assert rec["run"]["id"] == (out / RUN_ID_FILE).read_text().strip()
    assert rec["exit_code"] == 0

    table = rec["tables"]["per_role"]
    assert table["columns"] == PER_ROLE_COLUMNS
    rows = {(r[0], r[1]): dict(zip(PER_ROLE_COLUMNS, r)) for r in table["data"]}
    assert set(rows) == {("doctor", "speaker"), ("friend", "speaker"), ("doctor", "audience")}
    assert rows["doctor", "speaker"]["accuracy"] == pytest.approx(0.75)
    assert rows["doctor", "speaker"]["delta_vs_control"] == pytest.approx(0.25)
    assert rows["doctor", "audience"]["delta_vs_control"] == pytest.approx(-0.5)
    assert rows["friend", "speaker"]["category"] == "social" and rows["friend", "speaker"]["interpersonal"] is True
    assert rows["doctor", "speaker"]["domain"] == "medicine" and rows["friend", "speaker"]["domain"] is None
    assert rows["doctor", "speaker"]["n"] == 4

    (art,) = [a for a in rec["artifacts"] if a["type"] == "predictions"]
    assert art["name"] == artifact_name(run_name) == "predictions-tiny-speaker-demo-1"
    assert sorted(art["files"]) == ["predictions.parquet", "summary.json"]

    for path in wandb_env.rglob("*"):  # run dir, wandb's config/cache/data dirs
        if path.is_file():
            data = path.read_bytes()
            assert FAKE_KEY.encode() not in data and HF_SECRET.encode() not in data, path


def test_same_out_dir_resumes_the_same_run_id(wandb_env):
    out = wandb_env / "job"
    ids = []
    for _ in range(2):
        t = WandbTracker(TrackingConfig(backend="wandb", mode="offline"))
        t.start({"a": 1}, out, "job", "g", [])
        assert t.run is not None
        ids.append(t.run.id)
        t.finish(ok=True)
    assert ids[0] == ids[1] == (out / RUN_ID_FILE).read_text().strip()
    assert len(offline_dirs(out)) == 2 and all(f"-{ids[0]}" in d.name for d in offline_dirs(out))


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused at once
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_server():
    """A host that accepts connections and never answers (like a black-holed route)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def http_server():
    """A host that answers every request with 404."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    srv.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_auto_with_a_key_and_a_refusing_host_goes_offline_at_once(wandb_env, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    mode, reason = resolve_mode(TrackingConfig(backend="wandb", mode="auto", probe_timeout_s=3.0))
    assert mode == "offline" and url in reason and "refused" in reason.lower()


def test_auto_with_a_key_and_a_silent_host_goes_offline_after_the_probe(wandb_env, monkeypatch, silent_server):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    mode, reason = resolve_mode(TrackingConfig(backend="wandb", mode="auto", probe_timeout_s=0.5))
    assert mode == "offline" and silent_server in reason
    assert "no answer within 0.5 s" in reason or "timed out" in reason  # the probe's timeout ended it


def test_auto_goes_online_only_with_a_key_and_an_answering_host(wandb_env, monkeypatch, http_server):
    monkeypatch.setenv("WANDB_BASE_URL", http_server)
    cfg = TrackingConfig(backend="wandb", mode="auto", probe_timeout_s=2.0)
    mode, reason = resolve_mode(cfg)
    assert mode == "offline" and "no W&B API key" in reason
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode(cfg)[0] == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment overrides auto ...
    assert resolve_mode(cfg)[0] == "disabled"
    cfg.mode = "offline"  # ... but not an explicit tracking.mode
    assert resolve_mode(cfg) == ("offline", "tracking.mode=offline")


def test_auto_start_with_a_fake_key_logs_one_line_and_runs_offline(wandb_env, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", closed_port_url())
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = wandb_env / "job"
    t = WandbTracker(TrackingConfig(backend="wandb", mode="auto", probe_timeout_s=0.5))
    t.start({"a": 1}, out, "job", "g", [])
    t.finish(ok=True)
    assert t.mode == "offline" and len(offline_dirs(out)) == 1
    records_ = [r for r in caplog.records if r.name == LOGGER]
    assert len(records_) == 1 and records_[0].levelname == "WARNING"  # a key is set: the user meant online
    line = records_[0].getMessage()
    assert "did not answer" in line and f"wandb sync {out}/wandb/offline-run-*" in line


def test_online_start_that_fails_falls_back_to_offline_within_the_init_timeout(wandb_env, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", closed_port_url())
    out = wandb_env / "job"
    seen = []
    real_init = wandb.init

    def init(*args, **kwargs):
        seen.append((kwargs["mode"], kwargs["settings"].init_timeout, kwargs["settings"].quiet))
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    t = WandbTracker(TrackingConfig(backend="wandb", mode="online", init_timeout_s=1.0))
    t.start({"a": 1}, out, "job", "g", [])
    t.finish(ok=True)
    assert t.mode == "offline" and len(offline_dirs(out)) == 1
    assert any("online start failed" in r.getMessage() for r in caplog.records)
    # quiet: without it wandb looks up the user's name outside init_timeout (~12 s here whatever the timeout)
    assert seen == [("online", 1.0, True), ("offline", 1.0, True)]


def boom(*args, **kwargs):
    raise RuntimeError("W&B is down")


def test_failing_init_is_a_warning_and_the_tracker_turns_off(wandb_env, monkeypatch, caplog):
    monkeypatch.setattr(wandb, "init", boom)
    out = wandb_env / "job"
    summary, df = write_results(out)
    t = WandbTracker(TrackingConfig(backend="wandb", mode="offline"))
    t.start({"a": 1}, out, "job", "g", [])
    t.log_results(summary, df, out)
    t.log_figures({"x": out / "summary.json"})
    t.finish(ok=False)
    t.finish(ok=False)
    assert t.run is None and t.mode == "off"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1 and "W&B is down" in warnings[0].getMessage()


def test_failing_log_is_a_warning_and_finish_still_works(wandb_env, monkeypatch, caplog):
    out = wandb_env / "job"
    summary, df = write_results(out)
    t = WandbTracker(TrackingConfig(backend="wandb", mode="offline"))
    t.start({"a": 1}, out, "job", "g", [])
    assert t.run is not None
    with monkeypatch.context() as m:
        m.setattr(type(t.run), "log_artifact", boom)
        t.log_results(summary, df, out)
    assert t.mode == "off"
    t.log_results(summary, df, out)  # off: no second attempt, no second warning
    t.finish(ok=False)
    t.finish(ok=False)
    assert t.run is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1 and "log_results" in warnings[0].getMessage()
    rec = records(offline_dirs(out)[0])
    assert rec["exit_code"] == 1 and "per_role" not in rec["summary"]  # nothing after the failure; the job's status


def test_make_tracker(monkeypatch, caplog):
    assert type(make_tracker(TrackingConfig(backend="none"))) is Tracker
    assert type(make_tracker(TrackingConfig(backend="wandb"))) is WandbTracker
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    assert type(make_tracker(TrackingConfig(backend="wandb"))) is Tracker
    assert any("cannot be imported" in r.getMessage() for r in caplog.records)


def test_redact_replaces_environment_secrets_anywhere_and_secret_named_keys():
    env = {"HF_TOKEN": HF_SECRET, "WANDB_API_KEY": FAKE_KEY, "TOKENIZERS_PARALLELISM": "false",
           "SHORT_KEY": "main", "HOME": "/root/not-a-secret"}
    cfg = {
        "model": {"path": "org/model", "revision": "main", "batch_tokens": 4096, "tokenizer": "false"},
        "runs": [{"args": ("--token", HF_SECRET)}, f"key={FAKE_KEY};"],
        "hub": {"hf_token": "typed", "apiKey": "typed2", "password": "", "cache": "/root/not-a-secret"},
        HF_SECRET: 1,  # keys are names, not values: left as is
    }
    red = redact(cfg, environ=env)
    assert red["model"] == cfg["model"]  # "main" and "false" are too short to be secrets
    assert red["runs"][0]["args"] == ("--token", REDACTED)
    assert red["runs"][1] == f"key={REDACTED};"
    assert red["hub"] == {"hf_token": REDACTED, "apiKey": REDACTED, "password": "", "cache": "/root/not-a-secret"}
    assert cfg["hub"]["hf_token"] == "typed"  # a copy, not in place


@pytest.mark.parametrize("name,secret", [
    ("HF_TOKEN", True), ("WANDB_API_KEY", True), ("apiKey", True), ("db_password", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("HUGGING_FACE_HUB_TOKEN", True), ("hf_token", True),
    ("batch_tokens", False), ("TOKENIZERS_PARALLELISM", False), ("tokenizer", False), ("n_prompt_tokens", False),
    ("keyword", False), ("HOME", False),
])
def test_secret_name(name, secret):
    assert secret_name(name) is secret


def tiny_png(path: Path) -> Path:
    """A valid 1x1 grey PNG, written without pillow."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))
    return path


def test_log_figures_logs_images(wandb_env):
    out = wandb_env / "job"
    t = WandbTracker(TrackingConfig(backend="wandb", mode="offline"))
    t.start({"a": 1}, out, "job", "g", [])
    t.log_figures({"accuracy_by_role": tiny_png(wandb_env / "fig.png"), "missing": wandb_env / "none.png"})
    assert t.mode == "offline"
    t.finish(ok=True)
    rec = records(offline_dirs(out)[0])
    assert rec["summary"]["figures/accuracy_by_role"]["_type"] == "image-file"
    assert "figures/missing" not in rec["summary"]


@pytest.mark.slow
def test_run_py_with_a_fake_key_and_wandb_unreachable_finishes_offline_and_leaks_no_secret(wandb_env, monkeypatch):
    """The whole path: run.py on the embedded model, tracking=wandb (auto), a key set, W&B unreachable.
    The job completes, says once how to sync, logs everything offline, and no secret lands anywhere."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    monkeypatch.setenv("WANDB_BASE_URL", closed_port_url())
    out = wandb_env / "r"
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "run.py", "debug=tiny", "tracking=wandb", "scoring.self_check=0",
                        f"hydra.run.dir={out}"],
                       cwd=root, env=dict(os.environ), capture_output=True, text=True)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert log.count("W&B offline:") == 1 and "wandb sync" in log
    local = pd.read_parquet(out / "predictions.parquet")
    saved = json.loads((out / "summary.json").read_text())
    assert len(local) == saved["n_prompts"] == 30

    (run_dir,) = offline_dirs(out)
    rec = read_wandb_offline(run_dir)
    assert rec["summary"]["accuracy/control"] == pytest.approx(saved["accuracy"]["control"])
    assert {"accuracy/persona_mean", "accuracy/template/speaker", "delta_vs_control/template/audience",
            "throughput/prompts_per_s"} <= set(rec["summary"])
    assert {f"accuracy/category/{c}" for c in local.role_category.dropna()} <= set(rec["summary"])
    assert len(rec["tables"]["per_role"]["data"]) == 4  # 2 roles x 2 templates
    assert [a["type"] for a in rec["artifacts"]].count("predictions") == 1
    assert rec["run"]["group"] == "demo" and {"gemma3_270m", "demo", "speaker"} <= set(rec["run"]["tags"])
    assert rec["config"]["model"]["name"] == "gemma3_270m"
    # the job's report figures are logged as images, the same files as in its report folder
    logged = {k for step in rec["history"] for k, v in step.items() if k.startswith("figures/")}
    written = json.loads((out / "report" / "report.json").read_text())["figures"]
    assert logged and len(logged) == len(written)
    assert all(isinstance(v, dict) and v.get("_type") == "image-file" for step in rec["history"]
               for k, v in step.items() if k.startswith("figures/"))

    assert FAKE_KEY not in log and HF_SECRET not in log
    for path in wandb_env.rglob("*"):  # results, .hydra, run.log, wandb's run and its own dirs
        if path.is_file():
            data = path.read_bytes()
            assert FAKE_KEY.encode() not in data and HF_SECRET.encode() not in data, path


# -- W&B as the place where runs are compared: resolved config, statistics, the report, the sweep's run -------

def persona_stats() -> list[dict]:
    """report.json's persona_effects for predictions(): the report's statistics per persona."""
    return [
        {"template": "speaker", "role": "doctor", "delta": 0.25, "ci_low": 0.05, "ci_high": 0.45, "p": 0.01,
         "p_adj": 0.03, "q_bh": 0.02, "significant": True, "verdict": "effect", "n_better": 1, "n_worse": 0},
        {"template": "speaker", "role": "friend", "delta": 0.0, "ci_low": -0.004, "ci_high": 0.004, "p": 1.0,
         "p_adj": 1.0, "q_bh": 1.0, "significant": False, "verdict": "no effect larger than 1 point", "n_better": 0,
         "n_worse": 0},
        {"template": "audience", "role": "doctor", "delta": -0.5, "ci_low": -0.9, "ci_high": -0.1, "p": 0.02,
         "p_adj": 0.04, "q_bh": 0.03, "significant": True, "verdict": "effect", "n_better": 0, "n_worse": 2},
    ]


def model_analysis(effects: list[dict]) -> dict:
    """One model's part of report.json, with the keys report/analyse.py writes."""
    return {"n_boot": 200, "persona_effects": effects,
            "contrasts": [{"contrast": "persona - control", "estimate": -0.083, "ci_low": -0.2, "ci_high": 0.04,
                           "p": 0.2, "p_adj": 0.4, "significant": False}],
            "attributes": {"estimates": [{"term": "template=audience", "estimate": -0.375, "ci_low": -0.6,
                                          "ci_high": -0.15, "p": 0.004, "p_adj": 0.008, "significant": True,
                                          "verdict": "effect"}]},
            "families": [{"name": "persona_vs_control", "n_tests": 3, "n_significant": 2, "n_equivalent": 1,
                          "verdicts": {"effect": 2, "no effect larger than 1 point": 1}}],
            "power": {"persona_mde": 0.12, "discordance": 0.2, "attributes": [{"term": "template=audience", "mde": 0.3}]},
            "best_persona": {"persona": "speaker: doctor", "delta": 0.25, "shrunken": 0.1, "ci_low": -0.02,
                             "ci_high": 0.3, "rank_ci_low": 1, "rank_ci_high": 2}}


def write_report_dir(report_dir: Path, doc: dict) -> Path:
    """A report folder as report/write.py leaves it: report.json, report.html and the figures."""
    (report_dir / "figures").mkdir(parents=True)
    doc = {"meta": {"runs": [], "options": {"n_boot": 200}}, "cross_model": {}, **doc,
           "figures": {"personas": "figures/personas.png"}}
    (report_dir / "report.json").write_text(json.dumps(doc))
    (report_dir / "report.html").write_text("<html><body><h1>persona-bench report</h1></body></html>")
    tiny_png(report_dir / "figures" / "personas.png")
    return report_dir


def test_job_report_reaches_wandb_as_statistics_keys_table_columns_html_and_artifact(wandb_env):
    out = wandb_env / "job"
    summary, df = write_results(out)
    summary["self_check"] = {"n_compared": 30, "agreement": 0.9667, "max_prob_diff": 0.0123, "mean_prob_diff": 0.002}
    report_dir = write_report_dir(out / "report", {"models": ["tiny"], "per_model": {"tiny": model_analysis(persona_stats())}})
    t = WandbTracker(TrackingConfig(backend="wandb", mode="offline"))
    t.start({"a": 1}, out, "job", "g", [])
    t.log_results(summary, df, out)
    t.log_report(report_dir, {"personas": report_dir / "figures" / "personas.png"})
    assert t.mode == "offline"
    t.finish(ok=True)
    rec = records(offline_dirs(out)[0])
    s = rec["summary"]
    assert s["self_check/agreement"] == 0.9667 and s["self_check/max_prob_diff"] == 0.0123
    assert (s["persona/speaker/doctor/delta"], s["persona/speaker/doctor/ci_low"], s["persona/speaker/doctor/ci_high"],
            s["persona/speaker/doctor/p_adj"]) == (0.25, 0.05, 0.45, 0.03)
    assert s["contrast/persona-control/ci_high"] == 0.04 and s["contrast/persona-control/significant"] is False
    assert s["attribute/template=audience/verdict"] == "effect" and s["attribute/template=audience/mde"] == 0.3
    assert s["family/persona_vs_control/n_significant"] == 2
    assert s["family/persona_vs_control/verdict/no effect larger than 1 point"] == 1
    assert s["power/persona_mde"] == 0.12 and s["best_persona/persona"] == "speaker: doctor"
    assert s["report"]["_type"] == "html-file" and s["figures/personas"]["_type"] == "image-file"
    (art,) = [a for a in rec["artifacts"] if a["type"] == "report"]
    assert art["name"] == "report-job" and sorted(art["files"]) == ["report.html", "report.json"]
    # one per_role table, with the report's statistics beside each persona's accuracy
    assert sum("per_role" in step for step in rec["history"]) == 1
    table = rec["tables"]["per_role"]
    assert table["columns"] == PER_ROLE_COLUMNS + STAT_COLUMNS
    rows = {(r[0], r[1]): dict(zip(table["columns"], r)) for r in table["data"]}
    assert rows["doctor", "speaker"]["delta_vs_control"] == pytest.approx(0.25)  # from the predictions
    assert (rows["doctor", "speaker"]["ci_low"], rows["doctor", "speaker"]["p_adj"]) == (0.05, 0.03)
    assert rows["friend", "speaker"]["verdict"] == "no effect larger than 1 point"
    assert rows["doctor", "audience"]["significant"] is True and rows["doctor", "audience"]["n_worse"] == 2


def sweep_doc() -> dict:
    """A cross-run report.json of model a (two shards of one job, merged) and model b (one job)."""
    stamp = {"ran": {"dtype": "bf16", "quantization": "none", "device": "cuda"}, "config_id": "c0ffee00",
             "scoring": {"method": "letter", "format": "mmlu"}, "placement": "system"}
    runs = [{**stamp, "path": f"/s/a-c0ffee00-shard{i}of2", "model": {"model": "a"},
             "shard": {"index": i, "count": 2, "whole_config_id": "c0ffee00"}} for i in (0, 1)]
    runs.append({**stamp, "path": "/s/b-c0ffee00", "model": {"model": "b"}})
    side = [{"model": m, "n_questions": 40, "n_personas": 3, "control_accuracy": c, "persona_accuracy": p,
             "delta": p - c, "ci_low": p - c - 0.1, "ci_high": p - c + 0.1, "p": 0.3, "p_adj": 0.6, "significant": False,
             "best_persona": "speaker: doctor", "n_significant_better": 1, "n_significant_worse": 0}
            for m, c, p in (("a", 0.5, 0.55), ("b", 0.6, 0.58))]
    return {"meta": {"runs": runs, "options": {"n_boot": 200}}, "models": ["a", "b"],
            "per_model": {m: model_analysis(persona_stats()) for m in ("a", "b")},
            "cross_model": {"side_by_side": side, "role_model_delta": [{"role": "doctor", "a": 0.1, "b": -0.2}],
                            "rank_agreement": [{"model_a": "a", "model_b": "b", "spearman": 0.5}]}}


def test_sweep_report_is_one_more_run_of_the_group_with_each_models_merged_results(wandb_env):
    from omegaconf import OmegaConf

    from persona_bench.run.sweep import SWEEP_REPORT, track_sweep_report

    sweep = wandb_env / "sweep"
    report_dir = write_report_dir(sweep / "report", sweep_doc())
    config = OmegaConf.create({"tracking": OmegaConf.structured(TrackingConfig(backend="wandb", mode="offline")),
                               "sweep_name": "chat-v1", "experiment_name": "paper"})
    track_sweep_report(config, sweep, {"personas": report_dir / "figures" / "personas.png"})
    rec = records(offline_dirs(sweep)[0])
    assert rec["run"]["job_type"] == SWEEP_REPORT == "sweep-report" and rec["run"]["group"] == "chat-v1"
    assert rec["run"]["name"] == "chat-v1-sweep-report" and {"a", "b", "paper", "sweep-report"} <= set(rec["run"]["tags"])
    s = rec["summary"]
    assert (s["a/accuracy/control"], s["a/accuracy/persona_mean"], s["b/accuracy/control"]) == (0.5, 0.55, 0.6)
    assert s["b/delta_vs_control/persona_mean/estimate"] == pytest.approx(-0.02)
    assert s["a/delta_vs_control/persona_mean/ci_high"] == pytest.approx(0.15)
    assert (s["a/n_runs"], s["b/n_runs"], s["a/n_questions"]) == (2, 1, 40)  # a's two shards: one merged result
    assert rec["config"]["models"] == ["a", "b"]
    assert rec["config"]["runs"]["a-c0ffee00-shard1of2"]["shard"] == {"index": 1, "count": 2, "whole_config_id": "c0ffee00"}
    assert rec["config"]["runs"]["b-c0ffee00"]["dtype"] == "bf16" and rec["config"]["runs"]["b-c0ffee00"]["placement"] == "system"
    assert set(rec["tables"]) == {"cross_model/side_by_side", "cross_model/role_model_delta", "cross_model/rank_agreement",
                                  "per_role"}
    per_role = rec["tables"]["per_role"]
    assert per_role["columns"][:3] == ["model", "role", "template"] and len(per_role["data"]) == 6  # 2 models x 3 personas
    assert s["report"]["_type"] == "html-file" and [a["type"] for a in rec["artifacts"]].count("report") == 1
    assert (sweep / RUN_ID_FILE).is_file()  # a rerun of the sweep updates the same run


def test_sweep_report_with_tracking_none_starts_no_run(wandb_env):
    from omegaconf import OmegaConf

    from persona_bench.run.sweep import track_sweep_report

    sweep = wandb_env / "sweep"
    write_report_dir(sweep / "report", sweep_doc())
    track_sweep_report(OmegaConf.create({"tracking": {"backend": "none"}, "sweep_name": "s"}), sweep, {})
    assert not (sweep / "wandb").exists() and not (sweep / RUN_ID_FILE).exists()


def test_project_entity_and_group_come_from_the_config_then_the_environment_then_the_defaults(wandb_env, monkeypatch):
    env = {"WANDB_PROJECT": "env-project", "WANDB_ENTITY": "env-team", "WANDB_RUN_GROUP": "env-group"}
    unset = TrackingConfig(backend="wandb")
    assert run_target(unset, "sweep-1", environ={}) == {"project": "persona-bench", "entity": None, "group": "sweep-1"}
    assert run_target(unset, "sweep-1", environ=env) == {"project": "env-project", "entity": "env-team",
                                                         "group": "env-group"}
    both = TrackingConfig(backend="wandb", project="cfg-project", entity="cfg-team", group="cfg-group")
    assert run_target(both, "sweep-1", environ=env) == {"project": "cfg-project", "entity": "cfg-team",
                                                        "group": "cfg-group"}
    # and what a run records: WANDB_PROJECT and WANDB_RUN_GROUP reach it when the config leaves them null
    for k in ("WANDB_PROJECT", "WANDB_RUN_GROUP"):
        monkeypatch.setenv(k, env[k])
    for cfg, want in ((TrackingConfig(backend="wandb", mode="offline"), ("env-project", "env-group")),
                      (TrackingConfig(backend="wandb", mode="offline", project="cfg-project", group="cfg-group"),
                       ("cfg-project", "cfg-group"))):
        out = wandb_env / want[0]
        t = WandbTracker(cfg)
        t.start({"a": 1}, out, "job", "sweep-1", [])
        t.finish(ok=True)
        run = records(offline_dirs(out)[0])["run"]
        assert (run["project"], run["group"]) == want


def test_logged_config_keeps_only_the_roles_used_and_adds_the_resolved_values():
    from types import SimpleNamespace

    from helpers import compose_cfg

    from persona_bench.run.logged import job_labels, logged_config

    cfg = compose_cfg(["role_set=paper", "role_set.names=[doctor,mother]", "tracking=wandb"])
    catalogue = len(cfg.role_set.roles)
    job = SimpleNamespace(cfg=cfg, roles=[SimpleNamespace(name="doctor"), SimpleNamespace(name="mother")],
                          templates=[SimpleNamespace(name=n) for n in ("control", "speaker")],
                          config_id="abcd1234", method="letter", fmt="mmlu")
    logged = logged_config(job)
    assert catalogue > 100 and logged["role_set"]["n_catalogue"] == catalogue
    assert [r["name"] for r in logged["role_set"]["roles"]] == ["doctor", "mother"]
    assert set(logged["role_set"]["domains"]) == {"medicine"}  # the domains of the roles used
    assert logged["resolved"] == {"config_id": "abcd1234", "scoring": "letter", "format": "mmlu",
                                  "shard": {"index": 0, "count": 1}}
    assert logged["model"]["dtype"] == cfg.model.dtype and logged["tracking"]["project"] is None
    assert job_labels(job) == ("benchmark", [cfg.model.name, cfg.experiment_name, "control", "speaker"])
    cfg.shard.count, cfg.shard.index = 3, 1  # a shard: never taken for the model's whole result
    assert job_labels(job) == ("shard", [cfg.model.name, cfg.experiment_name, "control", "speaker", "shard", "shard1of3"])
    cfg.tracking.job_type = "eval"  # a job type the user set stays
    assert job_labels(job)[0] == "eval"


def test_resolved_values_from_a_summary():
    from persona_bench.run.logged import resolved_values

    summary = {"ran": {"dtype": "bf16", "revision": "0123abcd", "quantization": "nf4", "device": "cuda"},
               "config_id": "abcd1234", "scoring": {"method": "cloze", "format": "cloze"}, "placement": "user",
               "model": {"backend": "hf", "n_params": 268_000_000},
               "shard": {"index": 0, "count": 1, "whole_config_id": "abcd1234", "n_questions": 5}}
    assert resolved_values(summary) == {
        "dtype": "bf16", "revision": "0123abcd", "quantization": "nf4", "device": "cuda", "config_id": "abcd1234",
        "scoring": "cloze", "format": "cloze", "placement": "user", "backend": "hf", "n_params": 268_000_000,
        "shard": {"index": 0, "count": 1, "whole_config_id": "abcd1234"}}
