"""Sharding (shard.index / shard.count): the assignment of questions to shards, the job identities and
run directories, a real sharded run on a tiny model whose shards add up to the unsharded run, the
report reading shards as one run (and naming missing ones), and a real `run.py -m` sweep over shards.
Bad shard values are rows of the table in test_bad_input.py."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import CONF, ROOT, compose_cfg, tiny_cfg
from hydra import compose, initialize_config_dir

from persona_bench.analysis.runs import load_runs
from persona_bench.config.errors import ConfigError
from persona_bench.config.job_id import config_id, job_identity
from persona_bench.inputs import shards as shard
from persona_bench.inputs.questions import make_question
from persona_bench.run import runner

KEY = ["question_id", "template", "role"]
SUBJECTS = ("anatomy", "astronomy", "virology")


# -- the assignment -----------------------------------------------------------------------------------------
def questions(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [make_question(SUBJECTS[i % 3], f"Question {i} about {rng.random()}?", ["w", "x", "y", "z"], i % 4)
            for i in range(n)]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64])
def test_assignment_is_disjoint_covering_balanced_and_independent_of_order(count):
    qs = questions(200)
    shards = [shard.select(qs, i, count) for i in range(count)]
    ids = [[q.id for q in s] for s in shards]
    assert sorted(i for s in ids for i in s) == sorted(q.id for q in qs)  # covering, and disjoint
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 200
    assert all(s.n_total == 200 and s.count == count for s in shards)
    for i, s in enumerate(ids):  # each shard keeps the loaded order: its rows are the whole run's rows
        assert s == [q.id for q in qs if q.id in set(s)]
    shuffled = qs[:]
    random.Random(1).shuffle(shuffled)
    for i in range(count):  # the same questions whatever the order they load in
        assert {q.id for q in shard.select(shuffled, i, count)} == set(ids[i])
    assert shard.assign([q.id for q in qs], count) == shard.assign([q.id for q in shuffled], count)


def test_a_repeated_question_stays_in_one_shard_and_empty_shards_are_refused():
    qs = questions(9)
    qs = qs + [qs[4]]  # dataset.dedupe=false can repeat a question
    owner = [i for i in range(3) for q in shard.select(qs, i, 3) if q.id == qs[4].id]
    assert len(owner) == 2 and owner[0] == owner[1]
    with pytest.raises(ConfigError, match=r"shard.count=10 is more than the 9 questions of this job; use "
                                          r"shard.count=9 or fewer"):
        shard.select(qs, 0, 10)


# -- identities and directories -----------------------------------------------------------------------------
# The ids of unsharded jobs as they were before sharding existed (computed at 9264cf4): their run
# directories must not move.
PINNED = {(): "7c73b78a", ("debug=tiny",): "1f4630aa", ("experiment=paper", "model=llama2"): "eb896ece"}


@pytest.mark.parametrize("overrides", list(PINNED))
def test_an_unsharded_job_keeps_its_config_id(overrides):
    cfg = compose_cfg(list(overrides))
    assert config_id(cfg) == PINNED[overrides] == config_id(cfg, shard=False)
    assert "shard" not in job_identity(cfg)


def test_shards_have_their_own_identity_and_a_readable_directory_under_the_whole_jobs_id():
    """The run directory as Hydra resolves it (conf/hydra/default.yaml's resolvers) and the ids, of the
    DictConfig (what the resolvers see) and of the typed config (what the runner and the store see)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["debug=tiny", "shard.count=3", "output_dir=/tmp/x"], return_hydra_config=True)
    typed = compose_cfg(["debug=tiny", "shard.count=3", "shard.index=1"])
    ids = []
    for i in range(3):
        cfg.shard.index = i
        assert cfg.hydra.run.dir == f"outputs/demo/gemma3_270m-1f4630aa-shard{i}of3"
        assert cfg.hydra.sweep.subdir == f"gemma3_270m-1f4630aa-shard{i}of3"
        assert job_identity(cfg)["shard"] == {"index": i, "count": 3} and config_id(cfg, shard=False) == "1f4630aa"
        ids.append(config_id(cfg))
    assert len(set(ids)) == 3 and "1f4630aa" not in ids and config_id(typed) == ids[1]
    cfg.shard.count, cfg.shard.index = 1, 0
    assert cfg.hydra.run.dir == "outputs/demo/gemma3_270m-1f4630aa" and config_id(cfg) == "1f4630aa"


# -- a real sharded run -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qfile(tmp_path_factory):
    """Ten short questions in three subjects (a file dataset: no MMLU parsing, short prompts)."""
    path = tmp_path_factory.mktemp("shard-data") / "questions.jsonl"
    with path.open("w") as fh:
        for q in questions(10, seed=2):
            fh.write(json.dumps({"question": q.question, "choices": q.choices, "answer": q.answer,
                                 "subject": q.subject}) + "\n")
    return path


def cfg_for(tiny_model_dir, qfile, out, **over):
    # a budget of a few prompts per batch: the shards' batches (hence their padding) differ from the whole run's
    return tiny_cfg(tiny_model_dir("llama"), "llama", out, scoring__method="letter", scoring__format="mmlu",
                    model__batch_tokens=600, role_set__names=["doctor"], dataset__name="file", dataset__source="file",
                    dataset__path=str(qfile), dataset__sample=None, dataset__subjects=None, dataset__per_subject=None,
                    **over)


@pytest.fixture(scope="module")
def sharded(tiny_model_dir, qfile, tmp_path_factory):
    """The unsharded job and its three shards, run for real."""
    root = tmp_path_factory.mktemp("sharded")
    whole = root / "whole"
    runner.run(cfg_for(tiny_model_dir, qfile, whole))
    shards = []
    for i in range(3):
        out = root / "shards" / f"tiny_llama-shard{i}of3"
        runner.run(cfg_for(tiny_model_dir, qfile, out, shard__index=i, shard__count=3))
        shards.append(out)
    return whole, shards


def sort(df):
    return df.sort_values(KEY, na_position="first").reset_index(drop=True)


def test_the_union_of_the_shards_is_the_unsharded_run(sharded):
    whole, shards = sharded
    a = sort(pd.read_parquet(whole / "predictions.parquet"))
    parts = [pd.read_parquet(s / "predictions.parquet") for s in shards]
    for p in parts:  # every persona of a question is in the question's shard: the control, speaker and audience
        assert (p.groupby("question_id").size() == 3).all()
    b = sort(pd.concat(parts, ignore_index=True))
    assert not b.duplicated(KEY).any() and len(a) == len(b) == 10 * 3
    assert a[KEY].fillna("").equals(b[KEY].fillna(""))
    assert (a.pred == b.pred).all() and (a.correct == b.correct).all() and (a.prompt == b.prompt).all()
    # Scores are not bit-identical: a prompt's batch-mates differ, hence its left padding, and torch's CPU
    # SDPA kernel rounds differently over a padded key range (with eager attention, or a batch size change
    # without padding, they are bit-identical). Measured on the tiny llama, opt and t5 models, letter and
    # cloze: at most 1e-6 in a score (logit or log-likelihood), 2e-7 in a probability; fp32 rounding.
    sa, sb = np.stack(a.scores.map(np.asarray)), np.stack(b.scores.map(np.asarray))
    np.testing.assert_allclose(sb, sa, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.stack(b.label_probs.map(np.asarray)), np.stack(a.label_probs.map(np.asarray)),
                               rtol=0, atol=1e-5)


def test_each_shard_records_its_place_and_identity(sharded):
    whole, shards = sharded
    w = json.loads((whole / "summary.json").read_text())
    assert w["shard"] == {"index": 0, "count": 1, "n_questions": 10, "n_questions_total": 10,
                          "whole_config_id": w["config_id"]}
    sizes = []
    for i, s in enumerate(shards):
        summary = json.loads((s / "summary.json").read_text())
        job = json.loads((s / "job.json").read_text())
        sh = summary["shard"]
        assert (sh["index"], sh["count"], sh["n_questions_total"], sh["whole_config_id"]) == (i, 3, 10, w["config_id"])
        assert summary["dataset"]["n_questions"] == sh["n_questions"] and summary["n_prompts"] == 3 * sh["n_questions"]
        assert job["identity"]["shard"] == {"index": i, "count": 3} and job["config_id"] == summary["config_id"]
        sizes.append(sh["n_questions"])
    assert sorted(sizes) == [3, 3, 4]
    assert "shard" not in json.loads((whole / "job.json").read_text())["identity"]


def test_the_report_reads_the_shards_as_one_run_and_names_missing_ones(sharded, tmp_path, caplog):
    whole, shards = sharded
    a = load_runs([whole]).predictions["tiny_llama"]
    merged = load_runs([shards[0].parent])
    assert list(merged.predictions) == ["tiny_llama"] and len(merged.runs["tiny_llama"]) == 3
    assert merged.warnings == []
    pd.testing.assert_frame_equal(sort(merged.predictions["tiny_llama"]), sort(a))
    for s in shards[1:]:
        shutil.copytree(s, tmp_path / s.name)
    with caplog.at_level(logging.WARNING):
        part = load_runs([tmp_path])
    n = sum(json.loads((s / "summary.json").read_text())["shard"]["n_questions"] for s in shards[1:])
    whole_id = json.loads((whole / "summary.json").read_text())["config_id"]
    assert part.warnings == [f"tiny_llama: shard(s) 0 of 3 of job {whole_id} are missing or unfinished; the "
                             f"results hold 2 of its 3 shards ({n} of 10 questions)"]
    assert part.warnings[0] in caplog.text
    assert part.predictions["tiny_llama"].question_id.nunique() == n
    # ... and the report itself says so, in report.json and at the top of report.html
    from persona_bench.report.analyse import Options
    from persona_bench.report.write import write_report

    write_report([tmp_path], tmp_path / "report", Options(n_boot=50, seed=0, similarity=False))
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["meta"]["warnings"] == part.warnings
    assert "missing or unfinished" in (tmp_path / "report" / "report.html").read_text()


# -- a real sweep over shards -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_over_shards_writes_one_directory_each_and_reports_them_as_one_model(tiny_model_dir, qfile, tmp_path):
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "tiny_llama.yaml").write_text(yaml.safe_dump({
        "name": "tiny_llama", "source": "local", "path": str(tiny_model_dir("llama")), "arch": "causal",
        "dtype": "fp32", "scoring": "letter", "params_b": 0.0001}))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY") and not k.startswith("WANDB_")}
    for name in ("config", "cache", "data"):  # wandb's own folders; its runs go into each job's and the sweep's folder
        (tmp_path / f"wandb-{name}").mkdir()
        env[f"WANDB_{name.upper()}_DIR"] = str(tmp_path / f"wandb-{name}")
    env["WANDB_MODE"] = "offline"
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "shard.index=0,1", "shard.count=2",
                        "model=tiny_llama", "dataset=file", f"dataset.path={qfile}", "role_set.names=[doctor]",
                        "tracking=wandb", "progress=false", "report.perplexity=false", "report.similarity=false",
                        "report.n_boot=50", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                        f"hydra.sweep.dir={tmp_path / 's'}"], cwd=ROOT, capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted((tmp_path / "s").glob("tiny_llama-*"))
    whole_id = jobs[0].name.split("-")[1]
    assert [j.name for j in jobs] == [f"tiny_llama-{whole_id}-shard{i}of2" for i in range(2)]
    assert [json.loads((j / "summary.json").read_text())["shard"]["n_questions"] for j in jobs] == [5, 5]
    doc = json.loads((tmp_path / "s" / "report" / "report.json").read_text())
    assert doc["models"] == ["tiny_llama"] and len(doc["meta"]["runs"]) == 2
    assert {r["shard"]["index"] for r in doc["meta"]["runs"]} == {0, 1}
    assert load_runs([tmp_path / "s"]).predictions["tiny_llama"].question_id.nunique() == 10
    # W&B: each shard's run is marked a shard (never taken for the model's result); the sweep's report run holds
    # the one merged result
    from wandb_records import read_wandb_offline

    for i, job in enumerate(jobs):
        run = read_wandb_offline(next((job / "wandb").glob("offline-run-*")))["run"]
        assert run["job_type"] == "shard" and {"shard", f"shard{i}of2"} <= set(run["tags"])
    merged = read_wandb_offline(next((tmp_path / "s" / "wandb").glob("offline-run-*")))
    assert merged["run"]["job_type"] == "sweep-report" and merged["run"]["group"] == run["group"]
    assert (merged["summary"]["tiny_llama/n_runs"], merged["summary"]["tiny_llama/n_questions"]) == (2, 10)
