"""The report: run directories in, report.json + report.html + figures out; the page checked in a real
headless Chromium; shards read as one run; a two-model sweep gets its cross-run report by itself."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import CONF, ROOT

import persona_bench.report as report
from persona_bench.analysis.runs import load_runs
from persona_bench.analysis.synthetic import (
    PlantedEffects,
    make_predictions,
    roles_frame,
)

PAPER_ROLES = CONF / "role_set" / "paper.yaml"
TEMPLATES = {"control": "", "speaker": "You are {a} {role}.", "audience": "You are talking to {a} {role}."}
STRATEGIES = {"random", "best_on_train", "best_per_subject", "best_in_domain", "most_similar", "classifier",
              "majority_vote", "oracle"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]


def write_run(df: pd.DataFrame, out: Path, model: str = "synthetic", config_id: str = "0000abcd") -> Path:
    """A complete job directory as the runner leaves it (predictions, summary, job identity)."""
    out.mkdir(parents=True, exist_ok=True)
    facts = yaml.safe_load(PAPER_ROLES.read_text())
    df = df.assign(model=model, prompt=df.get("prompt", "Question: ...\nAnswer:"))
    df.to_parquet(out / "predictions.parquet")
    summary = {"model": {"model": model, "path": f"synthetic/{model}", "revision": "main", "dtype": "fp32",
                         "quantization": "none", "device": "cpu"},
               "config_id": config_id, "experiment": "test", "role_set": "paper", "templates": TEMPLATES,
               "dataset": {"name": "synthetic", "n_questions": int(df.question_id.nunique()), "data_hash": "feed"},
               "placement": "plain", "scoring": {"method": "cloze", "format": "cloze"}, "n_prompts": len(df)}
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "job.json").write_text(json.dumps({"config_id": config_id, "identity": {"role_set": facts}}))
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 400-question run of 24 paper roles x speaker/audience with planted effects, and its report."""
    roles, domains = roles_frame(PAPER_ROLES)
    keep = ["doctor", "lawyer", "mathematician", "janitor", "enemy", "mother", "father", "sister", "friend",
            "teacher", "economist", "psychologist", "historian", "physicist", "software engineer", "nurse",
            "judge", "partner", "coworker", "student", "AI language model", "chatbot", "painter", "farmer"]
    roles = roles[roles["name"].isin(keep)]
    assert len(roles) >= 20
    df, truth = make_predictions(roles, n_questions=400, effects=PlantedEffects(role={"doctor": 0.12}),
                                 domains=domains, seed=3)
    root = tmp_path_factory.mktemp("synthetic")
    run = write_run(df, root / "runs" / "synthetic-0000abcd")
    out = root / "report"
    assert report.main([str(run), "--out", str(out), "--n-boot", "400"]) == 0
    return {"df": df, "truth": truth, "n_personas": 2 * len(roles), "run": run, "out": out, "json": json.loads((out / "report.json").read_text())}


def test_report_json_holds_every_section(synthetic):
    doc = synthetic["json"]
    assert doc["models"] == ["synthetic"]
    m = doc["per_model"]["synthetic"]
    for key in ("persona_effects", "groups", "contrasts", "domain_match", "regression", "randomness", "mechanisms",
                "correlations", "strategies", "attributes"):
        assert m[key], key
    att = {r["term"]: r for r in m["attributes"]["estimates"]}
    assert att["template=audience"]["ci_low"] > 0 and "p" in att["template=audience"]  # planted audience effect
    assert m["attributes"]["collinearity"] and isinstance(m["attributes"]["warnings"], list)
    assert len(m["persona_effects"]) == synthetic["n_personas"]
    assert {"template", "role_category", "gender", "domain", "interpersonal"} <= set(m["groups"])
    assert m["regression"]["specification"] and m["regression"]["coefficients"]
    assert {s["strategy"] for s in m["strategies"]} == STRATEGIES
    assert {c["measure"] for c in m["correlations"]} >= {"log10_wordfreq", "log10_ngram_frequency", "similarity"}
    assert doc["cross_model"]["side_by_side"][0]["model"] == "synthetic"
    # the planted doctor effect is the best persona and is significant
    best = max(m["persona_effects"], key=lambda r: r["delta"])
    assert best["role"] == "doctor" and best["significant"]
    # the selection-aware best persona (shrunken estimate, rank interval) finds it too, and the headline says so
    assert len(m["shrinkage"]) == synthetic["n_personas"] and m["best_persona"]["role"] == "doctor"
    assert m["best_persona"]["rank_ci_low"] == 1 and m["best_persona"]["ci_low"] > 0
    head = doc["cross_model"]["side_by_side"][0]
    assert head["best_persona"].endswith("doctor") and head["best_rank_ci_low"] == 1 and "best_delta" not in head
    assert {s["interval"] for s in m["strategies"]} == {"selection re-run", "test questions",
                                                        "test questions (classifier fit kept fixed)"}
    assert all("p" in s and "mcnemar_p" not in s for s in m["strategies"])
    for name, rel in doc["figures"].items():
        png = synthetic["out"] / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert {"synthetic/factors", "synthetic/personas", "synthetic/mechanisms", "synthetic/strategies",
            "role_model_heatmap"} <= set(doc["figures"])
    stamp = doc["meta"]["runs"][0]
    assert stamp["config_id"] == "0000abcd" and stamp["dataset"]["data_hash"] == "feed"


def test_report_html_is_self_contained_with_every_section(synthetic):
    page = (synthetic["out"] / "report.html").read_text()
    for heading in ("Headline", "Does any persona beat the control?",
                    "Attribute effects, adjusted: which kinds of role help?",
                    "Factors, descriptive (unadjusted): template, role category, gender", "Expertise domains",
                    "Regression: question fixed effects (within-question OLS), errors clustered by question",
                    "How random is it?",
                    "Which persona is best? Shrunken estimates and rank intervals",
                    "Mechanisms: why do some personas do better?", "Can the best persona be found automatically?",
                    "Models side by side", "Methods", "Runs: data and model stamps"):
        assert heading in page, heading
    assert page.count("data:image/png;base64,") == len(synthetic["json"]["figures"])
    assert "src=\"http" not in page and "href=\"http" not in page  # nothing fetched from outside


def chromium_paths() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("PERSONA_BENCH_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


def open_in_chromium(page: Path, screenshot: Path) -> tuple[list, list, str]:
    """Load `page` in headless Chromium; return its images' (alt, complete, width, height), the browser
    console log and the page text, and save a full-page screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", "--window-size=1280,1000"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        text = driver.execute_script("return document.body.innerText")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "format": "png"})
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    return images, logs, text


def test_report_opens_in_headless_chromium_with_every_figure_decoded(synthetic):
    shot = synthetic["out"] / "screenshot.png"
    images, logs, text = open_in_chromium(synthetic["out"] / "report.html", shot)
    assert len(images) == len(synthetic["json"]["figures"])
    broken = [alt for alt, complete, w, h in images if not (complete and w > 100 and h > 100)]
    assert not broken, f"figures that did not decode: {broken}"
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []
    assert "Can the best persona be found automatically?" in text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_shards_of_one_model_are_read_as_one_run(synthetic, tmp_path):
    df = synthetic["df"]
    questions = sorted(df.question_id.unique())
    half = set(questions[: len(questions) // 2])
    write_run(df[df.question_id.isin(half)], tmp_path / "shard0", config_id="aaaa0000")
    write_run(df[~df.question_id.isin(half)], tmp_path / "shard1", config_id="bbbb1111")
    whole = load_runs([synthetic["run"]]).predictions["synthetic"]
    shards = load_runs([tmp_path]).predictions
    assert list(shards) == ["synthetic"]
    key = ["question_id", "template", "role"]
    a = whole.sort_values(key, na_position="first").reset_index(drop=True)
    b = shards["synthetic"].sort_values(key, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key + ["correct", "pred"]], b[key + ["correct", "pred"]])


def test_bad_run_directories_fail_with_one_clear_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no complete run in" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_of_two_models_writes_the_cross_run_report(tiny_model_dir, tmp_path):
    """run.py -m over two tiny local models (llama, opt) with the parallel launcher (two joblib worker
    processes): each job writes its report, and the sweep's callback writes the cross-run report with
    both models side by side and their rank agreement. W&B (offline) gets one run per model and the
    sweep's report as a third run of the same group: the models side by side in one view."""
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    for arch in ("llama", "opt"):
        (conf / f"tiny_{arch}.yaml").write_text(yaml.safe_dump({
            "name": f"tiny_{arch}", "source": "local", "path": str(tiny_model_dir(arch)), "arch": "causal",
            "dtype": "fp32", "scoring": "cloze", "params_b": 0.0001}))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY", "PERSONA_BENCH_N_JOBS")
           and not k.startswith("WANDB_")}
    env.update(wandb_dirs(tmp_path), WANDB_MODE="offline")
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                        "hydra.job_logging.formatters.simple.format='%(asctime)s pid=%(process)d %(message)s'",
                        "model=tiny_llama,tiny_opt", "tracking=wandb", "sweep_name=two-models",
                        "dataset.subjects=[clinical_knowledge,high_school_physics,international_law]",
                        "dataset.per_subject=4", "role_set.names=[doctor,lawyer,friend,mother]", "progress=false",
                        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.sweep.dir={tmp_path / 's'}",
                        "report.n_boot=200"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted((tmp_path / "s").glob("tiny_*"))
    assert len(jobs) == 2 and all((j / "report" / "report.html").is_file() for j in jobs)
    assert all(len(pd.read_parquet(j / "perplexity.parquet")) == 8 for j in jobs)
    doc = json.loads((tmp_path / "s" / "report" / "report.json").read_text())
    assert sorted(doc["models"]) == ["tiny_llama", "tiny_opt"]
    assert len(doc["cross_model"]["side_by_side"]) == 2 and len(doc["cross_model"]["rank_agreement"]) == 1
    assert (tmp_path / "s" / "report" / "figures" / "role_model_heatmap.png").is_file()
    assert "cross-run report of 2 jobs" in p.stderr + p.stdout
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in p.stdout + p.stderr
    assert all(json.loads((j / "status.json").read_text())["state"] == "complete" for j in jobs)
    pids = {int(pid) for j in jobs for pid in re.findall(r"pid=(\d+)", (j / "run.log").read_text())}
    assert len(pids) == 2 and os.getpid() not in pids  # one worker process per job
    check_sweep_in_wandb(tmp_path / "s", jobs, doc)


def wandb_dirs(tmp_path: Path) -> dict:
    """wandb's own config, cache and data folders under tmp_path (a subprocess's environment)."""
    dirs = {f"WANDB_{n.upper()}_DIR": tmp_path / f"wandb-{n}" for n in ("config", "cache", "data")}
    for d in dirs.values():
        d.mkdir()
    return {k: str(v) for k, v in dirs.items()}


def check_sweep_in_wandb(sweep: Path, jobs: list[Path], doc: dict) -> None:
    """The offline W&B records of the two-model sweep: a run per model with the values it ran with, the roles it
    used, the report's statistics, its page and report.json; and the sweep's report as one more run of the group."""
    from wandb_records import read_wandb_offline

    from persona_bench.run.logged import PER_ROLE_COLUMNS, STAT_COLUMNS

    for job in jobs:
        (run_dir,) = sorted((job / "wandb").glob("offline-run-*"))
        rec = read_wandb_offline(run_dir)
        summary = json.loads((job / "summary.json").read_text())
        assert rec["run"]["group"] == "two-models" and rec["run"]["job_type"] == "benchmark"
        resolved = rec["config"]["resolved"]
        assert resolved["config_id"] == summary["config_id"] and resolved["dtype"] == "fp32"
        assert (resolved["scoring"], resolved["format"]) == ("cloze", summary["scoring"]["format"])
        assert resolved["placement"] == summary["placement"] and resolved["device"] == "cpu"
        assert resolved["quantization"] == "none"
        assert [r["name"] for r in rec["config"]["role_set"]["roles"]] == ["doctor", "lawyer", "friend", "mother"]
        assert rec["config"]["role_set"]["n_catalogue"] > 100  # the whole catalogue is not logged
        s = rec["summary"]
        assert s["accuracy/control"] == pytest.approx(summary["accuracy"]["control"])
        assert {"persona/speaker/doctor/ci_low", "persona/audience/mother/p_adj", "contrast/persona-control/p_adj",
                "family/persona_vs_control/n_significant", "self_check/agreement", "self_check/max_prob_diff"} <= set(s)
        assert any(k.startswith("attribute/") and k.endswith("/verdict") for k in s)
        assert s["report"]["_type"] == "html-file"
        assert {a["type"] for a in rec["artifacts"]} >= {"predictions", "report"}
        table = rec["tables"]["per_role"]
        assert table["columns"] == PER_ROLE_COLUMNS + STAT_COLUMNS and len(table["data"]) == 8
        assert all(row[table["columns"].index("verdict")] for row in table["data"])
    (run_dir,) = sorted((sweep / "wandb").glob("offline-run-*"))
    rec = read_wandb_offline(run_dir)
    assert rec["run"]["group"] == "two-models" and rec["run"]["job_type"] == "sweep-report"
    side = {r["model"]: r for r in doc["cross_model"]["side_by_side"]}
    for model in ("tiny_llama", "tiny_opt"):
        assert rec["summary"][f"{model}/accuracy/control"] == pytest.approx(side[model]["control_accuracy"])
        assert rec["summary"][f"{model}/accuracy/persona_mean"] == pytest.approx(side[model]["persona_accuracy"])
    assert len(rec["tables"]["cross_model/side_by_side"]["data"]) == 2
    assert rec["summary"]["figures/role_model_heatmap"]["_type"] == "image-file"
    assert rec["summary"]["report"]["_type"] == "html-file" and "report" in {a["type"] for a in rec["artifacts"]}
