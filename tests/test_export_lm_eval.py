"""The lm-evaluation-harness export (persona_bench/report/export_lm_eval.py) of a small run folder written in the
run-folder layout: the files parse, lm-eval's file-name helpers find the task and date, there is one task per persona
and one for the control, each task's accuracy is the run's, and every sample has lm-eval's fields."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from persona_bench.outputs import CONTROL, PREDICTION_COLUMNS
from persona_bench.report import export_lm_eval as lm

ROLES = ["doctor", "software engineer"]
TEMPLATES = {"control": "", "speaker": "You are {a} {role}.", "audience": "You are talking to {a} {role}."}
SAMPLE_FIELDS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
                 "prompt_hash", "target_hash", "acc"}


def write_run(out, generate=False, n_questions=4):
    """A complete letter-scored run folder (predictions, summary, job) as the runner leaves it."""
    rng = np.random.default_rng(0)
    rows = []
    personas = [(CONTROL, None)] + [(t, r) for t in ("speaker", "audience") for r in ROLES]
    for q in range(n_questions):
        answer = q % 4
        for template, role in personas:
            persona = "" if role is None else TEMPLATES[template].format(a="a", role=role) + "\n"
            probs = rng.dirichlet(np.ones(4))
            pred = int(np.argmax(probs))
            row = {c: None for c in PREDICTION_COLUMNS}
            row.update(model="tiny", question_id=f"anatomy/{q:016x}", subject="anatomy", template=template, role=role,
                       placement="plain", scoring="letter", format="mmlu",
                       prompt=f"{persona}Question {q}?\nA. a\nB. b\nC. c\nD. d\nAnswer:", prompt_hash=f"{q:016x}",
                       n_prompt_tokens=20, choices=[" A", " B", " C", " D"], n_choices=4,
                       scores=np.log(probs).tolist(), label_probs=probs.tolist(), label_mass=0.5, pred=pred,
                       answer=answer, correct=pred == answer, split="test")
            if generate:
                row.update(generation=f"The answer is {'ABCD'[pred]}", parsed="ABCD"[pred] if q else None,
                           n_new_tokens=5, parse_rule="answer is", logit_pred=pred, logit_correct=pred == answer)
            rows.append(row)
    df = pd.DataFrame(rows)
    out.mkdir(parents=True)
    df.to_parquet(out / "predictions.parquet")
    summary = {"model": {"model": "tiny", "path": "org/tiny-model", "revision": "abc123", "dtype": "bf16",
                         "device": "cpu", "backend": "hf", "n_params": 1000},
               "config_id": "0000abcd", "templates": TEMPLATES, "placement": "plain",
               "dataset": {"name": "mmlu_paper", "data_hash": "feed"},
               "scoring": {"method": "generate" if generate else "letter", "format": "mmlu"},
               "accuracy": {"control": float(df[df.template == CONTROL].correct.mean())},
               "throughput": {"seconds": 1.5}}
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "job.json").write_text(json.dumps({"config_id": "0000abcd", "identity": {"seed": 0}}))
    return df


def test_a_run_exports_one_lm_eval_task_per_persona_with_the_runs_accuracy(tmp_path):
    df = write_run(tmp_path / "run")
    path = lm.export(tmp_path / "run", tmp_path / "out", date_id="2026-11-30T12-00-00.000001")
    assert path == tmp_path / "out" / "org__tiny-model" / "results_2026-11-30T12-00-00.000001.json"  # lm-eval's layout
    doc = json.loads(path.read_text())
    personas = df[["template", "role"]].drop_duplicates()
    tasks = {lm.task_name(t, None if pd.isna(r) else r) for t, r in personas.itertuples(index=False)}
    assert len(tasks) == 2 * len(ROLES) + 1  # personas x templates + control
    assert {"persona_bench_control", "persona_bench_speaker_software_engineer"} <= tasks
    assert set(doc["results"]) == tasks | {"persona_bench_speaker", "persona_bench_audience"}  # + a group per template
    assert doc["group_subtasks"]["persona_bench_audience"] == ["persona_bench_audience_doctor",
                                                               "persona_bench_audience_software_engineer"]
    for (template, role), rows in df.groupby(["template", df.role.fillna("")]):
        got = doc["results"][lm.task_name(template, role or None)]
        p, n = rows.correct.mean(), len(rows)
        assert got["acc,none"] == pytest.approx(p) and got["sample_len"] == n
        assert got["acc_stderr,none"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))  # lm-eval's mean stderr
    assert doc["results"]["persona_bench_speaker"]["acc,none"] == pytest.approx(df[df.template == "speaker"].correct.mean())
    assert doc["results"]["persona_bench_control"]["acc,none"] == pytest.approx(
        json.loads((tmp_path / "run" / "summary.json").read_text())["accuracy"]["control"])
    for key in ("configs", "versions", "n-shot", "higher_is_better", "n-samples", "task_hashes"):
        assert tasks <= set(doc[key]), key
    assert doc["configs"]["persona_bench_speaker_doctor"]["description"] == "You are a doctor."
    assert doc["configs"]["persona_bench_audience_software_engineer"]["output_type"] == "multiple_choice"
    assert doc["config"]["model"] == "hf" and doc["config"]["model_args"] == \
        "pretrained=org/tiny-model,revision=abc123,dtype=bfloat16"
    assert doc["model_name"] == "org/tiny-model" and isinstance(doc["date"], float)

    files = sorted(path.parent.glob("samples_*.jsonl"))
    assert len(files) == len(tasks)
    for f in files:
        task = f.name[f.name.find("_") + 1:f.name.rfind("_")]  # as lm_eval.utils.get_file_task_name reads it
        assert task in tasks and f.name[f.name.rfind("_") + 1:] == "2026-11-30T12-00-00.000001.jsonl"
        samples = [json.loads(line) for line in f.read_text().splitlines()]
        assert len(samples) == doc["n-samples"][task]["effective"] == 4
        assert [s["doc_id"] for s in samples] == [0, 1, 2, 3]  # one question, one doc_id, in every task
        for s in samples:
            assert SAMPLE_FIELDS <= set(s), SAMPLE_FIELDS - set(s)
            assert s["doc_hash"] == hashlib.sha256(json.dumps(s["doc"], indent=2).encode()).hexdigest()
            assert s["target"] == str(s["doc"]["answer"]) and len(s["arguments"]) == 4 == len(s["resps"])
            prompt = s["arguments"]["gen_args_0"]["arg_0"]
            assert s["prompt_hash"] == hashlib.sha256(prompt.encode()).hexdigest()
            assert [a["arg_1"] for a in s["arguments"].values()] == [" A", " B", " C", " D"]
            lls = [float(r[0][0]) for r in s["resps"]]
            assert max(range(4), key=lls.__getitem__) == s["persona_bench"]["pred"]  # the label's log-probability
            assert s["acc"] == float(s["persona_bench"]["pred"] == s["doc"]["answer"])
        assert doc["task_hashes"][task] == hashlib.sha256(
            "".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples).encode()).hexdigest()


def test_a_generate_run_exports_generations_and_parsed_answers(tmp_path):
    write_run(tmp_path / "run", generate=True)
    path = lm.export(tmp_path / "run", date_id="d")
    assert path.parent.parent == tmp_path / "run" / "lm_eval"  # the default OUT_DIR
    doc = json.loads(path.read_text())
    assert doc["configs"]["persona_bench_control"]["output_type"] == "generate_until"
    first, second = [json.loads(x) for x in (path.parent / "samples_persona_bench_control_d.jsonl").read_text().splitlines()[:2]]
    assert first["resps"][0][0].startswith("The answer is") and first["filtered_resps"] == ["[invalid]"]  # unparsed
    assert second["filtered_resps"] == [second["resps"][0][0][-1]] and list(second["arguments"]) == ["gen_args_0"]


def test_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path, capsys):
    write_run(tmp_path / "sweep" / "tiny-0000abcd")
    assert lm.main([str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "is not a complete run folder" in err and "tiny-0000abcd" in err and len(err.splitlines()) == 1
