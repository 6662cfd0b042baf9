"""A run folder in lm-evaluation-harness's results and samples format, for scripts and viewers that read lm-eval's
output (its results table, sample viewers, leaderboard parsers).

    python -m persona_bench.report.export_lm_eval RUN_DIR [OUT_DIR]
    -> OUT_DIR/<model>/results_<date>.json and samples_<task>_<date>.jsonl, one per task

OUT_DIR defaults to RUN_DIR/lm_eval; <model> is the model's path or hub id as lm-eval names its folder
(`google/flan-t5-xxl` -> `google__flan-t5-xxl`), <date> the export's time as lm-eval writes it.

One lm-eval task per persona: `persona_bench_<template>_<role>` (role in lower case, runs of other characters as
`_`), and `persona_bench_control` for the prompt without a persona; each template is also a group,
`persona_bench_<template>`, over its roles. Every task has the run's questions as its documents (doc_id: the
question's position in the run's sorted question ids, the same in every task), metric `acc` (the run's `correct`,
so each task's accuracy is the run's accuracy of that persona) and its standard error as lm-eval computes it for a
mean, sqrt(p (1 - p) / (n - 1)). The mapping of every field is in docs/outputs.md (Export to lm-evaluation-harness).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from persona_bench.inputs.roles import as_role, persona_texts, roles_of_run
from persona_bench.outputs import CONTROL, JOB, PREDICTIONS, SUMMARY, write_atomic

PREFIX = "persona_bench"
METRIC = "acc"
FILTER = "none"   # lm-eval's name for "no filter applied"
OUT_DIR = "lm_eval"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # ours -> torch's names, as lm-eval's model_args


def hash_string(text: str) -> str:
    """lm-eval's hash of documents, prompts and targets: sha256 of the UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def task_name(template: str, role: Optional[str]) -> str:
    """The lm-eval task of one persona: persona_bench_<template>_<role>; the control: persona_bench_control."""
    if template == CONTROL or role is None:
        return f"{PREFIX}_{CONTROL}"
    return f"{PREFIX}_{_slug(template)}_{_slug(role)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def sanitize_model_name(name: str) -> str:
    """The folder lm-eval names after a model (its utils.sanitize_model_name)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def mean_stderr(values: list[float]) -> float | str:
    """lm-eval's standard error of a mean (sample standard deviation / sqrt(n)); "N/A" below two values."""
    n = len(values)
    if n < 2:
        return "N/A"
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _list(x: Any) -> Optional[list]:
    return None if _missing(x) else list(x.tolist() if hasattr(x, "tolist") else x)


def read_run(run_dir: Path) -> tuple[pd.DataFrame, dict, dict]:
    """predictions, summary and job.json of one complete run folder; ValueError naming what is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).is_file() or not (run_dir / PREDICTIONS).is_file():
        below = sorted(p.parent.name for p in run_dir.glob(f"*/{SUMMARY}")) if run_dir.is_dir() else []
        hint = f"; the runs below it: {', '.join(below)} (export each)" if below else ""
        raise ValueError(f"{run_dir} is not a complete run folder (it needs {SUMMARY} and {PREDICTIONS}){hint}")
    job = json.loads((run_dir / JOB).read_text()) if (run_dir / JOB).is_file() else {}
    return pd.read_parquet(run_dir / PREDICTIONS), json.loads((run_dir / SUMMARY).read_text()), job


def _personas(summary: dict, job: dict, roles: list[str]) -> dict[tuple[str, str], str]:
    """(template, role) -> the persona sentence the run used (summary's template texts, the run's roles)."""
    try:
        built = roles_of_run(job["identity"])  # the run's own articles ("an", "a") and names
    except Exception:  # noqa: BLE001 - an older or custom run: articles by pronunciation
        built = []
    known = {r.name for r in built}
    built += [as_role({"name": r}) for r in roles if r not in known]
    texts = persona_texts(summary.get("templates") or {}, built)
    return {(t, r): text for t, r, text in texts.itertuples(index=False)}


def _loglikelihoods(row: dict) -> list[float]:
    """Each choice's log-likelihood after the prompt, as lm-eval's loglikelihood requests return it: letter scoring,
    log(share among the labels x the labels' vocabulary mass) = the label token's log-probability over the whole
    vocabulary; cloze, the option's summed log-likelihood; else the saved scores."""
    probs, mass, sums = _list(row.get("label_probs")), row.get("label_mass"), _list(row.get("option_logprob_sum"))
    if probs is not None and not _missing(mass):
        return [math.log(p * mass) if p * mass > 0 else -math.inf for p in probs]
    if sums is not None:
        return [float(s) for s in sums]
    return [float(s) for s in _list(row.get("scores")) or []]


def _sample(row: dict, doc_id: int, persona: Optional[str], generate: bool, gen_kwargs: dict,
            doc_hashes: dict) -> dict:
    """One line of a samples file: lm-eval's fields (arguments, resps and filtered_resps as its tracker writes
    them: strings), and ours under "persona_bench". doc_hashes: question_id -> doc_hash, filled on the way (a
    question's doc is the same in every task)."""
    choices = [str(c) for c in _list(row.get("choices")) or []]
    doc = {"question_id": row["question_id"], "subject": row["subject"], "answer": int(row["answer"]),
           "split": row.get("split")}
    if row.get("format") == "cloze":
        doc["choices"] = [c.strip() for c in choices]
    target = int(row["answer"])
    prompt = row["prompt"]
    if generate:
        arguments = {"gen_args_0": {"arg_0": prompt, "arg_1": gen_kwargs}}
        parsed = row.get("parsed")
        resps, filtered = [[str(row.get("generation") or "")]], ["[invalid]" if _missing(parsed) else str(parsed)]
    else:
        arguments = {f"gen_args_{i}": {"arg_0": prompt, "arg_1": c} for i, c in enumerate(choices)}
        lls = _loglikelihoods(row)
        resps = [[[str(ll), "None"]] for ll in lls]  # (loglikelihood, is_greedy); is_greedy is not recorded here
        filtered = [[str(ll), "None"] for ll in lls]
    acc = 1.0 if bool(row["correct"]) else 0.0
    return {"doc_id": doc_id, "doc": doc, "target": str(target), "arguments": arguments, "resps": resps,
            "filtered_resps": filtered, "filter": FILTER, "metrics": [METRIC],
            "doc_hash": doc_hashes.get(doc["question_id"]) or doc_hashes.setdefault(
                doc["question_id"], hash_string(json.dumps(doc, indent=2, ensure_ascii=False, default=str))),
            "prompt_hash": hash_string(prompt), "target_hash": hash_string(str(target)), METRIC: acc,
            "persona_bench": {"template": row["template"], "role": None if _missing(row.get("role")) else row["role"],
                              "persona": persona, "pred": int(row["pred"]), "scoring": row.get("scoring"),
                              "format": row.get("format"), "placement": row.get("placement")}}


def _config(summary: dict, job: dict, generate: bool, gen_kwargs: dict) -> dict:
    """lm-eval's "config" block (simple_evaluate's arguments), from what the run recorded."""
    model = summary.get("model") or {}
    path, revision, dtype = model.get("path") or model.get("model"), model.get("revision"), model.get("dtype")
    args = [f"pretrained={path}"] + ([f"revision={revision}"] if revision else []) + \
        ([f"dtype={DTYPES.get(dtype, dtype)}"] if dtype else [])
    if model.get("quantization") in ("4bit", "8bit"):
        args.append(f"load_in_{model['quantization']}=True")
    seed = (job.get("identity") or {}).get("seed")
    return {"model": model.get("backend") or "hf", "model_args": ",".join(args),
            "model_num_parameters": model.get("n_params"), "model_dtype": f"torch.{DTYPES.get(dtype, dtype)}" if dtype
            else None, "model_revision": revision, "model_sha": revision, "batch_size": None, "batch_sizes": [],
            "device": model.get("device"), "use_cache": None, "limit": None, "bootstrap_iters": 0,
            "gen_kwargs": gen_kwargs if generate else None, "random_seed": seed, "numpy_seed": seed,
            "torch_seed": seed, "fewshot_seed": None}


def _task_config(task: str, template: str, role: Optional[str], persona: Optional[str], summary: dict,
                 generate: bool) -> dict:
    dataset = summary.get("dataset") or {}
    scoring = summary.get("scoring") or {}
    return {"task": task, "tag": [PREFIX] + ([f"{PREFIX}_{_slug(template)}"] if role is not None else []),
            "dataset_path": dataset.get("name"), "test_split": "test",
            "output_type": "generate_until" if generate else "multiple_choice",
            "doc_to_text": "the prompt persona-bench rendered (arguments.gen_args_*.arg_0)",
            "doc_to_target": "answer", "doc_to_choice": "choices", "description": persona or "",
            "target_delimiter": " ", "fewshot_delimiter": "\n\n", "num_fewshot": 0,
            "metric_list": [{"metric": METRIC, "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "template": template, "role": role, "persona": persona,
                         "scoring": scoring, "placement": summary.get("placement"),
                         "data_hash": dataset.get("data_hash"), "config_id": summary.get("config_id")}}


def export(run_dir: Path, out_dir: Optional[Path] = None, date_id: Optional[str] = None) -> Path:
    """Write one run folder in lm-eval's format (module doc); return the results file."""
    run_dir = Path(run_dir)
    df, summary, job = read_run(run_dir)
    model = summary.get("model") or {}
    model_name = str(model.get("path") or model.get("model") or df["model"].iloc[0])
    out = Path(out_dir or run_dir / OUT_DIR) / sanitize_model_name(model_name)
    date_id = date_id or datetime.now().isoformat().replace(":", "-")
    generate = "generation" in df.columns
    gen_kwargs = (summary.get("scoring") or {}).get("generate") or {}
    questions = {q: i for i, q in enumerate(sorted(df["question_id"].unique()))}
    roles = sorted(r for r in df["role"].dropna().unique())
    personas = _personas(summary, job, roles)

    keys = df[["template", "role"]].drop_duplicates().itertuples(index=False)
    tasks: dict[str, tuple[str, Optional[str]]] = {}
    for template, role in sorted(((t, None if _missing(r) else r) for t, r in keys),
                                 key=lambda k: (k[0] != CONTROL, k[0], k[1] or "")):
        name = task_name(template, role)
        if name in tasks:
            raise ValueError(f"personas {tasks[name]} and {(template, role)} both become the lm-eval task {name}")
        tasks[name] = (template, role)

    out.mkdir(parents=True, exist_ok=True)
    results, configs, n_samples, hashes, groups, subtasks, doc_hashes = {}, {}, {}, {}, {}, {}, {}
    rows = df.assign(_doc=df["question_id"].map(questions), _role=df["role"].where(df["role"].notna(), None))
    by_persona = {(t, r): g for (t, r), g in rows.groupby(["template", rows["_role"].fillna("")], sort=False)}
    for name, (template, role) in tasks.items():
        part = by_persona[(template, role or "")].sort_values("_doc")
        persona = personas.get((template, role))
        samples = [_sample(r, int(r["_doc"]), persona, generate, gen_kwargs, doc_hashes)
                   for r in part.to_dict("records")]
        accs = [s[METRIC] for s in samples]
        results[name] = {"name": name, "alias": CONTROL if role is None else role, "sample_len": len(accs),
                         f"{METRIC},{FILTER}": sum(accs) / len(accs), f"{METRIC}_stderr,{FILTER}": mean_stderr(accs)}
        configs[name] = _task_config(name, template, role, persona, summary, generate)
        n_samples[name] = {"original": len(samples), "effective": len(samples)}
        hashes[name] = hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples))
        if role is not None:
            subtasks.setdefault(f"{PREFIX}_{_slug(template)}", []).append(name)
        text = "".join(json.dumps(s, ensure_ascii=False, default=str) + "\n" for s in samples)
        write_atomic(out / f"samples_{name}_{date_id}.jsonl", lambda p, text=text: p.write_text(text, encoding="utf-8"))
    for group, members in subtasks.items():
        sizes = [n_samples[m]["effective"] for m in members]
        acc = sum(results[m][f"{METRIC},{FILTER}"] * n for m, n in zip(members, sizes)) / sum(sizes)
        # the personas of a template answer the same questions: their errors are not independent, so lm-eval's
        # pooled standard error would be too small; none is given
        groups[group] = {"name": group, "alias": tasks[members[0]][0], "sample_len": sum(sizes),
                         "sample_count": {f"{METRIC},{FILTER}": sum(sizes)},
                         f"{METRIC},{FILTER}": acc, f"{METRIC}_stderr,{FILTER}": "N/A"}
    ordered = {k: v for k, v in results.items() if tasks[k][1] is None}
    for group, members in subtasks.items():
        ordered[group] = groups[group]
        ordered.update({m: results[m] for m in members})
    everything = [*tasks, *groups]
    throughput = summary.get("throughput") or {}
    doc = {
        "results": ordered, "groups": groups,
        "group_subtasks": {**{g: m for g, m in subtasks.items()}, **{t: [] for t, (_, r) in tasks.items() if r is None}},
        "configs": dict(sorted(configs.items())),
        "versions": {**{t: 1.0 for t in tasks}, **{g: "N/A" for g in groups}},
        "n-shot": {t: 0 for t in everything},
        "higher_is_better": {t: {METRIC: True} for t in everything},
        "n-samples": n_samples,
        "config": _config(summary, job, generate, gen_kwargs),
        "git_hash": None,
        "date": (run_dir / SUMMARY).stat().st_mtime,
        "pretty_env_info": None,
        "transformers_version": (summary.get("packages") or {}).get("transformers"),
        "lm_eval_version": None,
        "upper_git_hash": None,
        "task_hashes": hashes,
        "model_source": model.get("backend") or "hf",
        "model_name": model_name,
        "model_name_sanitized": sanitize_model_name(model_name),
        "system_instruction": None,  # the persona is per task: configs.<task>.description
        "system_instruction_sha": None,
        "fewshot_as_multiturn": False,
        "chat_template": None,
        "chat_template_sha": None,
        "start_time": None,
        "end_time": None,
        "total_evaluation_time_seconds": str(throughput["seconds"]) if "seconds" in throughput else None,
        "persona_bench": {"run_dir": str(run_dir), "config_id": summary.get("config_id"),
                          "accuracy": summary.get("accuracy"), "packages": summary.get("packages")},
    }
    path = out / f"results_{date_id}.json"
    write_atomic(path, lambda p: p.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str),
                                              encoding="utf-8"))
    return path


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m persona_bench.report.export_lm_eval",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, metavar="RUN_DIR", help="a complete run folder (summary.json, predictions.parquet)")
    ap.add_argument("out", type=Path, nargs="?", metavar="OUT_DIR", help=f"default: RUN_DIR/{OUT_DIR}")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    try:
        path = export(args.run, args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(list(path.parent.glob(f"samples_*_{path.stem.removeprefix('results_')}.jsonl")))
    print(f"{path} ({n} tasks, {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
