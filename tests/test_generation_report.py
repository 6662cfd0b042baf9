"""Generated answers in the summaries and the report: unparsed answers counted apart, parse failures by
template and role, logit scoring against generation (agreement, sign of persona effects), the model's own
persona pick as a strategy, and an end-to-end report of a generate run beside a cloze run of the same model.
Synthetic tables only (no model); the page is also opened in headless Chromium (skipped without it):
about 35 s on 2 shared cores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_report import PAPER_ROLES, open_in_chromium, write_run

import persona_bench.report as report
from persona_bench.analysis import compare
from persona_bench.analysis import strategies as S
from persona_bench.analysis.runs import load_runs
from persona_bench.analysis.summary import (
    accuracy_summary,
    collapse_share,
    generation_summary,
    label_histogram,
    unparsed_examples,
)
from persona_bench.analysis.synthetic import make_predictions, roles_frame
from persona_bench.report.analyse import METHODS

GEN_HEADING = "Generated answers: what the parser could read"
CMP_HEADING = "Logit scoring versus generation"


# ------------------------------------------------------------------------------------------ summary
def eight_prompts() -> pd.DataFrame:
    """2 questions (answer B) x control, speaker/a, speaker/b, audience/a; two answers unparsed."""
    rows = [dict(question_id=f"q{q}", subject="s", template=t, role=r, role_category=None, gender=None,
                 answer=1, n_choices=4)
            for q in range(2) for t, r in (("control", None), ("speaker", "a"), ("speaker", "b"), ("audience", "a"))]
    df = pd.DataFrame(rows)
    df["pred"] = [1, 1, -1, 0, 1, -1, 1, 1]
    df["parsed"] = df["pred"] >= 0
    df["parse_rule"] = np.where(df["parsed"], "letter", "no option")
    df["correct"] = df["pred"] == df["answer"]
    df["logit_pred"] = [1, 1, 1, 0, 2, 1, 1, 1]
    df["logit_correct"] = df["logit_pred"] == df["answer"]
    return df


def test_generation_summary_by_hand():
    s = accuracy_summary(eight_prompts())
    g = s["generation"]
    assert g["n_prompts"] == 8 and g["n_parsed"] == 6
    assert g["parse_failure_rate"]["all"] == 0.25
    assert g["parse_failure_rate"]["control"] == 0.0 and g["parse_failure_rate"]["persona"] == pytest.approx(2 / 6)
    # one of the two speaker/b and one of the two speaker/a prompts failed: speaker 2/4; roles a 1/4, b 1/2
    assert g["parse_failure_rate"]["template"] == {"speaker": 0.5, "audience": 0.0, "control": 0.0}
    assert g["parse_failure_rate"]["role"] == {"b": 0.5, "a": 0.25, "control": 0.0}
    # all prompts: 5 of 8 right; personas 3 of 6 (= the existing persona_mean); parsed: 5 of 6, personas 3 of 4
    assert g["accuracy"] == {"all": 0.625, "control": 1.0, "persona_mean": 0.5}
    assert g["accuracy"]["persona_mean"] == s["accuracy"]["persona_mean"]
    assert g["parsed_accuracy"]["all"] == pytest.approx(5 / 6, abs=1e-6)
    assert g["parsed_accuracy"]["persona_mean"] == 0.75 and g["parsed_accuracy"]["control"] == 1.0
    assert g["parse_rules"] == {"letter": 6, "no option": 2}
    # letter logits: right on 6 of 8 (control 1 of 2, personas 5 of 6); same option as generated on 5 of 8,
    # and on 5 of the 6 parsed
    lg = g["logit"]
    assert lg["accuracy"]["all"] == 0.75 and lg["accuracy"]["control"] == 0.5
    assert lg["accuracy"]["persona_mean"] == pytest.approx(5 / 6, abs=1e-6)
    assert lg["agreement"] == 0.625 and lg["agreement_parsed"] == pytest.approx(5 / 6, abs=1e-6)


def test_logits_unavailable_gives_no_logit_block():
    df = eight_prompts().assign(logit_pred=-1)
    assert generation_summary(df)["logit"] is None


def test_histogram_counts_unparsed_apart_from_the_collapse_share():
    df = eight_prompts()
    hist = label_histogram(df)
    assert hist == {"A": 1, "B": 5, "C": 0, "D": 0, "unparsed": 2}
    assert sum(hist.values()) == len(df)
    assert collapse_share(hist) == ("B", 5 / 6)  # of the 6 read answers, not of all 8
    logit = df.drop(columns=["parsed", "parse_rule", "logit_pred", "logit_correct"]).assign(pred=[1, 1, 2, 0, 1, 3, 1, 1])
    s = accuracy_summary(logit)
    assert s["pred_histogram"] == {"A": 1, "B": 5, "C": 1, "D": 1} and "generation" not in s
    assert s["pred_top_share"] == 0.625
    everything_unparsed = df.assign(pred=-1)
    assert label_histogram(everything_unparsed) == {"A": 0, "B": 0, "C": 0, "D": 0, "unparsed": 8}
    assert collapse_share(label_histogram(everything_unparsed)) == ("", 0.0)


def test_unparsed_examples_are_cut_and_show_control_characters():
    df = eight_prompts().assign(generation=None)
    df["generation"] = df["generation"].astype(object)
    df.loc[2, "generation"] = "x" * 400
    df.loc[5, "generation"] = "Lond\x1e\nro"
    ex = unparsed_examples(df, n=5, chars=300)
    assert len(ex) == 2 and set(ex["role"]) == {"b", "a"}
    assert set(ex["generation"]) == {"x" * 300 + "...", "Lond\\x1e\nro"}


# ------------------------------------------------------------------------------- logits vs generation
def planted_pair() -> compare.Pair:
    """10 questions, answer 0. Control right on questions 0-4 under both. Personas (correct questions):
    up   logit 0-6 (+0.2), generate 0-7 (+0.3)    same sign
    down logit 0-2 (-0.2), generate 0-3 (-0.1)    same sign
    flip logit 0-7 (+0.3), generate 0-1 (-0.3)    opposite sign
    flat logit 0-4 ( 0.0), generate 0-5 (+0.1)    zero under the logits
    Wrong answers: logit says 1, generate says 2 (or -1, unparsed, on odd questions)."""
    right = {None: (5, 5), "up": (7, 8), "down": (3, 4), "flip": (8, 2), "flat": (5, 6)}
    rows = []
    for q in range(10):
        for role, (n_l, n_g) in right.items():
            rows.append(dict(question_id=f"q{q}", template="control" if role is None else "speaker", role=role or "",
                             answer=0, pred_logit=0 if q < n_l else 1,
                             pred_generate=0 if q < n_g else (-1 if q % 2 else 2)))
    f = pd.DataFrame(rows)
    f["parsed"] = f["pred_generate"] >= 0
    return compare.Pair("m: planted", compare.SAME_PROMPTS, "m", "m", "m", "letter", f)


def test_sign_agreement_and_agreement_on_planted_deltas():
    row, personas = compare.compare_pair(planted_pair())
    d = personas.set_index("role")
    assert d.loc["up", "delta_logit"] == pytest.approx(0.2) and d.loc["up", "delta_generate"] == pytest.approx(0.3)
    assert d.loc["flip", "delta_logit"] == pytest.approx(0.3) and d.loc["flip", "delta_generate"] == pytest.approx(-0.3)
    assert dict(d["sign"]) == {"up": "same", "down": "same", "flip": "opposite", "flat": "zero"}
    assert (row["n_personas"], row["n_same_sign"], row["n_opposite_sign"], row["n_zero"]) == (4, 2, 1, 1)
    assert row["share_same_sign"] == pytest.approx(2 / 3)
    x, y = [0.2, -0.2, 0.3, 0.0], [0.3, -0.1, -0.3, 0.1]  # up, down, flip, flat
    assert row["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert row["spearman"] == pytest.approx(-0.2)  # ranks (3,1,4,2) vs (4,2,1,3): 1 - 6 * 12 / 60
    # the two agree only where both are right (their wrong answers differ: 1 against 2 or -1); per question:
    same = {q: sum((q < n_l) == (q < n_g) and q < n_l for n_l, n_g in
                   [(5, 5), (7, 8), (3, 4), (8, 2), (5, 6)]) for q in range(10)}
    assert row["agreement"] == pytest.approx(sum(same.values()) / 50)
    assert row["question_agreement_mean"] == pytest.approx(np.mean([v / 5 for v in same.values()]))
    assert row["share_questions_full_agreement"] == pytest.approx(sum(v == 5 for v in same.values()) / 10)
    parsed = planted_pair().frame["parsed"]
    assert row["n_parsed"] == int(parsed.sum())
    assert row["agreement_parsed"] == pytest.approx(sum(same.values()) / parsed.sum())
    assert row["logit_control_accuracy"] == 0.5 and row["generate_persona_accuracy"] == pytest.approx(20 / 40)


# ---------------------------------------------------------------------------------------- strategies
def star_grid(n_q: int = 40) -> pd.DataFrame:
    """Every question in test; speaker/star always right, speaker/dud and audience/star always wrong, the
    control right on every 4th question."""
    rows = []
    for i in range(n_q):
        for t, r in (("control", None), ("speaker", "star"), ("speaker", "dud"), ("audience", "star")):
            ok = r == "star" and t == "speaker" or (r is None and i % 4 == 0)
            rows.append(dict(question_id=f"s/{i:03d}", subject="s", template=t, role=r, answer=0, pred=0 if ok else 1,
                             correct=ok, split="test", in_domain=None, prompt="Q?"))
    return pd.DataFrame(rows)


def test_model_pick_uses_the_picked_persona_and_falls_back_to_control():
    df = star_grid()
    qids = sorted(df["question_id"].unique())
    res = S.evaluate_strategies(df, None, n_boot=200, use_similarity=False, picks={q: "star" for q in qids})
    r = res.set_index("strategy")
    assert r.loc["model_pick/speaker", "accuracy"] == 1.0
    assert r.loc["model_pick/audience", "accuracy"] == 0.0  # audience/star is always wrong
    assert r.loc["model_pick/speaker", "control_accuracy"] == 0.25
    assert r.loc["model_pick/speaker", "p"] < 1e-6
    assert list(res["strategy"])[-1] == "oracle"
    assert "40 of 40 test questions have a parsed pick" in r.loc["model_pick/speaker", "detail"]
    assert "most picked: star (40)" in r.loc["model_pick/speaker", "detail"]
    # 10 unparsed, 10 unknown roles, 5 without a pick row: those 25 get the control (right on every 4th)
    picks = {q: None if i < 10 else "astronaut" if i < 20 else "star" for i, q in enumerate(qids[:35])}
    r = S.evaluate_strategies(df, None, n_boot=200, use_similarity=False, picks=picks).set_index("strategy")
    fallback = [i for i in range(40) if i < 20 or i >= 35]
    expected = (15 + sum(i % 4 == 0 for i in fallback)) / 40
    assert r.loc["model_pick/speaker", "accuracy"] == pytest.approx(expected)
    detail = r.loc["model_pick/speaker", "detail"]
    assert "25 of 40 test questions have a parsed pick (5 without a pick row), 15 name a role of the grid under speaker" in detail
    assert "1 distinct roles" in detail


def test_without_picks_no_model_pick_row_and_unparsed_answers_do_not_vote():
    df = star_grid(8)
    # two of three personas unparsed on question 0: the one read answer (speaker/star: right) wins the vote
    df.loc[(df["question_id"] == "s/000") & (df["template"] != "control") & (df["role"] != "star"), "pred"] = -1
    df.loc[(df["question_id"] == "s/000") & (df["template"] == "audience"), "pred"] = -1
    g = S.strategy_matrix(df)
    votes, _ = S.majority_vote(g, g.mask("test"))
    assert votes[0]
    res = S.evaluate_strategies(df, None, n_boot=50, use_similarity=False)
    assert not res["strategy"].str.startswith("model_pick").any()


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A cloze run and a generate run of one synthetic model (12 roles x 2 templates, 100 questions), the
    generate run with its letter logits, unparsed answers, a planted opposite-sign persona and self_pick;
    the report of both, and the report of the cloze run alone."""
    roles, domains = roles_frame(PAPER_ROLES)
    keep = ["doctor", "lawyer", "mathematician", "janitor", "enemy", "mother", "friend", "teacher", "nurse",
            "judge", "student", "farmer"]
    df, _ = make_predictions(roles[roles["name"].isin(keep)], n_questions=100, domains=domains, seed=5)
    df = df.drop(columns="p_true")
    janitor = ((df["template"] == "speaker") & (df["role"] == "janitor")).to_numpy()
    cloze = df.copy()
    cloze.loc[janitor, "pred"] = (cloze.loc[janitor, "answer"] + 1) % 4  # always wrong under cloze
    cloze["correct"] = cloze["pred"] == cloze["answer"]
    rng = np.random.default_rng(0)
    gen = df.copy()
    gen.loc[janitor, "pred"] = gen.loc[janitor, "answer"]  # always right when generated
    unparsed = (rng.random(len(gen)) < 0.1) & ~janitor
    gen.loc[unparsed, "pred"] = -1
    gen = gen.assign(correct=gen["pred"] == gen["answer"], scoring="generate", parsed=~unparsed,
                     parse_rule=np.where(unparsed, "no option found", "answer is X"),
                     generation=np.where(unparsed, "I would say <b>it depends</b> & more", "The answer is B"),
                     logit_pred=cloze["pred"].to_numpy(), n_new_tokens=7)
    gen["logit_correct"] = gen["logit_pred"] == gen["answer"]
    root = tmp_path_factory.mktemp("gen")
    write_run(cloze, root / "runs" / "synthetic-c10e0000", config_id="c10e0000")
    g_dir = write_run(gen, root / "runs" / "synthetic-9e9e0000", config_id="9e9e0000")
    summary = json.loads((g_dir / "summary.json").read_text())
    summary["scoring"] = {"method": "generate", "format": "paper", "cloze_score": "sum",
                          "generate": {"decoding": "greedy", "max_new_tokens": 32}}
    (g_dir / "summary.json").write_text(json.dumps(summary))
    qids = sorted(gen["question_id"].unique())
    picks = pd.DataFrame({"question_id": qids, "subject": [q.split("/")[0] for q in qids], "prompt": "Pick a role.",
                          "role": [None if i % 5 == 0 else "astronaut" if i % 5 == 1 else "doctor"
                                   for i in range(len(qids))]})
    picks["parsed"] = picks["role"].notna()
    picks["generation"] = "doctor"
    picks.to_parquet(g_dir / "self_pick.parquet")
    opts = report.Options(n_boot=200, seed=0, similarity=False)
    report.write_report([root / "runs"], root / "both", opts)
    report.write_report([root / "runs" / "synthetic-c10e0000"], root / "cloze", opts)
    return {"root": root, "gen": gen, "unparsed": unparsed, "qids": qids, "gen_dir": g_dir,
            "both": json.loads((root / "both" / "report.json").read_text()),
            "cloze": json.loads((root / "cloze" / "report.json").read_text())}


def test_results_keep_generation_columns_texts_of_unparsed_only_and_self_pick(runs):
    res = load_runs([runs["gen_dir"]])
    df = res.predictions["synthetic"]
    assert {"scoring", "parsed", "parse_rule", "logit_pred", "logit_correct", "generation"} <= set(df.columns)
    assert df["generation"].notna().sum() == runs["unparsed"].sum()
    assert (df.loc[df["generation"].notna(), "parsed"] == False).all()  # noqa: E712
    assert set(df.loc[df["generation"].notna(), "generation"]) == {"I would say <b>it depends</b> & more"}
    picks = res.self_pick["synthetic"]
    assert len(picks) == len(runs["qids"]) and picks["role"].isna().sum() == len(runs["qids"]) // 5
    assert load_runs([runs["root"] / "runs" / "synthetic-c10e0000"]).self_pick == {}


def test_report_of_a_generate_run_beside_a_cloze_run(runs):
    doc = runs["both"]
    gen_label, cloze_label = "synthetic-9e9e0000", "synthetic-c10e0000"
    assert sorted(doc["models"]) == [gen_label, cloze_label]
    g = doc["per_model"][gen_label]["generation"]
    assert g["n_parsed"] == len(runs["gen"]) - runs["unparsed"].sum()
    assert g["parse_failure_rate"]["all"] == pytest.approx(runs["unparsed"].mean(), abs=1e-6)
    by_role = g["failure_by_role"]
    assert [r["failure_rate"] for r in by_role] == sorted((r["failure_rate"] for r in by_role), reverse=True)
    assert {r["level"] for r in by_role} >= {"control", "janitor"}
    assert g["examples"] and "generation" not in doc["per_model"][cloze_label]
    pairs = {p["kind"]: p for p in doc["cross_model"]["logit_vs_generation"]}
    assert set(pairs) == {"same prompts", "separate runs: generate vs cloze"}
    sep = pairs["separate runs: generate vs cloze"]
    assert (sep["logit_label"], sep["generate_label"]) == (cloze_label, gen_label)
    assert sep["n_prompts"] == len(runs["gen"])
    # generated answers equal the cloze ones except where unparsed and for speaker/janitor
    janitor = ((runs["gen"]["template"] == "speaker") & (runs["gen"]["role"] == "janitor")).to_numpy()
    assert sep["agreement"] == pytest.approx(1 - (runs["unparsed"] | janitor).mean(), abs=1e-6)
    assert pairs["same prompts"]["agreement"] == pytest.approx(sep["agreement"], abs=1e-6)
    flips = [p for p in doc["cross_model"]["logit_vs_generation_personas"] if p["sign"] == "opposite"]
    assert ("speaker", "janitor") in {(p["template"], p["role"]) for p in flips}
    strat = {s["strategy"]: s for s in doc["per_model"][gen_label]["strategies"]}
    assert {"model_pick/speaker", "model_pick/audience"} <= set(strat)
    assert "most picked: doctor" in strat["model_pick/speaker"]["detail"]
    assert not any(s.startswith("model_pick") for s in
                   (r["strategy"] for r in doc["per_model"][cloze_label]["strategies"]))
    assert doc["figures"]["logit_vs_generation"] == "figures/logit_vs_generation.png"
    page = (runs["root"] / "both" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(doc["figures"])
    assert 'alt="persona differences: logits against generation"' in page
    assert page.count(GEN_HEADING) == 1 and CMP_HEADING in page
    assert "I would say &lt;b&gt;it depends&lt;/b&gt; &amp; more" in page and "<b>it depends</b>" not in page


def test_the_generation_report_opens_in_headless_chromium(runs):
    doc = runs["both"]
    images, logs, text = open_in_chromium(runs["root"] / "both" / "report.html", runs["root"] / "shot.png")
    assert len(images) == len(doc["figures"])
    assert all(complete and w > 100 and h > 100 for _, complete, w, h in images)
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []
    assert GEN_HEADING in text and "I would say <b>it depends</b> & more" in text  # shown as text, not markup


def test_a_logit_only_report_has_none_of_it(runs):
    doc = runs["cloze"]
    m = doc["per_model"]["synthetic"]
    assert "generation" not in m
    assert {"logit_vs_generation", "logit_vs_generation_personas"}.isdisjoint(doc["cross_model"])
    assert "logit_vs_generation" not in doc["figures"]
    assert {s["strategy"] for s in m["strategies"]} == {"random", "best_on_train", "best_per_subject",
                                                        "best_in_domain", "majority_vote", "oracle"}
    assert doc["methods"] == METHODS
    page = (runs["root"] / "cloze" / "report.html").read_text()
    assert GEN_HEADING not in page and CMP_HEADING not in page
