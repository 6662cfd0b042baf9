"""How long the report takes at the paper's size, stage by stage, on synthetic predictions.

    python benchmarks/report_speed.py                        # the paper's size: 2457 questions, 3 templates
    python benchmarks/report_speed.py --questions 20 --templates speaker --n-boot 50   # a quick look

Options: --questions (default 2457), --templates (default speaker,audience,interpersonal), --n-boot
(default 2000).

Builds one synthetic run of the paper's 162 roles (persona_bench.analysis.synthetic, with its planted
effects) in a temporary directory, then times what `python -m persona_bench.report` does:
loading, the statistics, the mechanisms (MiniLM on every question), the strategies, the
figures and the HTML. Prints one line per stage and the total.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from persona_bench.analysis import effects as analysis
from persona_bench.analysis import mechanisms, strategies
from persona_bench.analysis.runs import load_runs
from persona_bench.analysis.synthetic import make_predictions, roles_frame
from persona_bench.inputs.roles import persona_texts
from persona_bench.report import write as report

ROOT = Path(__file__).resolve().parents[1]  # the checkout: conf/ holds the paper's role set
PAPER = ROOT / "conf" / "role_set" / "paper.yaml"
TEMPLATES = {"speaker": "You are {a} {role}.", "audience": "You are talking to {a} {role}.",
             "interpersonal": "You are talking to your {role}."}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=2457)
    ap.add_argument("--templates", default="speaker,audience,interpersonal")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    names = args.templates.split(",")
    roles, domains = roles_frame(PAPER)
    t0 = time.perf_counter()
    df, _ = make_predictions(roles, n_questions=args.questions, templates=tuple(names), domains=domains, seed=0)
    interpersonal = set(roles.loc[roles["interpersonal"].astype(bool), "name"])
    if "interpersonal" in names:  # as the real template: interpersonal roles only
        df = df[(df["template"] != "interpersonal") | df["role"].isin(interpersonal)]
    # a question-like prompt per question (MiniLM's cost depends on the length)
    words = "which of the following best describes the effect of a change in the price on the quantity".split()
    df["prompt"] = [f"The following is a question about {s.replace('_', ' ')}.\n\n{' '.join(words)} {q[-6:]}?\n"
                    f"A. one\nB. two\nC. three\nD. four\nAnswer:" for s, q in zip(df["subject"], df["question_id"])]
    tmp = Path(tempfile.mkdtemp(prefix="report-speed-"))
    run = tmp / "synthetic-00000000"
    run.mkdir()
    df.to_parquet(run / "predictions.parquet")
    templates = {"control": "", **{k: TEMPLATES[k] for k in names}}
    (run / "summary.json").write_text(json.dumps({"model": {"model": "synthetic"}, "config_id": "00000000",
                                                  "templates": templates, "n_prompts": len(df)}))
    (run / "job.json").write_text(json.dumps({"identity": {"role_set": yaml.safe_load(PAPER.read_text())}}))
    print(f"synthetic run: {len(df):,} prompts ({args.questions} questions x {df.groupby(['template', 'role']).ngroups - 1}"
          f" personas + control) in {time.perf_counter() - t0:.1f} s")

    def stage(name, fn):
        t = time.perf_counter()
        out = fn()
        print(f"{name:<12} {time.perf_counter() - t:7.1f} s")
        return out

    start = time.perf_counter()
    results = stage("load", lambda: load_runs([run]))
    pred = results.predictions["synthetic"]
    stage("statistics", lambda: analysis.analyse(pred, n_boot=args.n_boot))
    texts = persona_texts({k: v for k, v in templates.items() if k != "control"}, results.roles.to_dict("records"))
    stage("similarity", lambda: mechanisms.similarity(pred, texts))
    stage("strategies", lambda: strategies.evaluate_strategies(pred, texts, n_boot=args.n_boot))
    stage("report", lambda: report.write_report([run], tmp / "report", report.Options(n_boot=args.n_boot)))
    print(f"{'total':<12} {time.perf_counter() - start:7.1f} s (the last stage is the whole report again: "
          f"embeddings are cached within the process)")


if __name__ == "__main__":
    main()
