"""The predicted-label collapse check reaches the report: report.json and report.html show each model's
predicted-label histogram beside the correct answers', and a warning when one label takes more than
scoring.collapse_warning of the predictions, with advice that fits the run's scoring method."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import pytest
from test_report import PAPER_ROLES, write_run

import persona_bench.report as report
from persona_bench.analysis.summary import COLLAPSE_ADVICE, accuracy_summary, collapse_message
from persona_bench.analysis.synthetic import make_predictions, roles_frame


def test_the_advice_fits_the_scoring_method():
    hist = {"A": 1, "B": 1, "C": 1, "D": 17}
    letter, cloze, gen = (collapse_message(hist, 0.6, m) for m in ("letter", "cloze", "generate"))
    assert letter.startswith("answer D takes 85% of all predictions (over 60%)") and "try scoring=cloze" in letter
    assert "scoring=cloze" not in cloze and "near chance" in cloze
    assert "parser" in gen and "scoring=cloze" not in gen
    assert collapse_message(hist, 0.9, "letter") is None  # 85% is not over 90%
    with_unparsed = collapse_message({**hist, "unparsed": 5}, 0.6, "generate")
    assert "(5 unreadable generated answers left out of the share)" in with_unparsed


def test_the_log_warning_has_the_same_advice(caplog):
    df = pd.DataFrame({"template": "control", "role": None, "role_category": None, "gender": None, "subject": "s",
                       "question_id": [f"s/{i}" for i in range(10)], "pred": [3] * 9 + [0], "answer": 0,
                       "n_choices": 4})
    df["correct"] = df["pred"] == df["answer"]
    accuracy_summary(df, 0.6, "cloze")
    assert COLLAPSE_ADVICE["cloze"] in caplog.text and "try scoring=cloze" not in caplog.text


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory):
    """Three synthetic models of 6 roles x 2 templates on 80 questions: two answer D to ~90% of the prompts (one
    scored by letter, one by cloze), one spreads its answers; and their report."""
    roles, domains = roles_frame(PAPER_ROLES)
    roles = roles[roles["name"].isin(["doctor", "lawyer", "mother", "friend", "teacher", "farmer"])]
    df, _ = make_predictions(roles, n_questions=80, domains=domains, seed=7)
    df = df.drop(columns="p_true")
    rng = np.random.default_rng(1)
    stuck = df.copy()
    stuck["pred"] = np.where(rng.random(len(df)) < 0.9, 3, stuck["pred"])
    stuck["correct"] = stuck["pred"] == stuck["answer"]
    root = tmp_path_factory.mktemp("collapse")
    runs = {"letterbot": ("letter", stuck), "clozebot": ("cloze", stuck), "spread": ("cloze", df)}
    for model, (method, frame) in runs.items():
        d = write_run(frame, root / "runs" / model, model=model, config_id=f"{len(model):08d}")
        summary = json.loads((d / "summary.json").read_text())
        summary["scoring"] = {"method": method, "format": "mmlu" if method == "letter" else "cloze"}
        (d / "summary.json").write_text(json.dumps(summary))
    out = root / "report"
    assert report.main([str(root / "runs"), "--out", str(out), "--n-boot", "50", "--no-similarity"]) == 0
    return {"stuck": stuck, "json": json.loads((out / "report.json").read_text()),
            "html": (out / "report.html").read_text(encoding="utf-8")}


def test_report_json_has_the_histogram_and_the_warning(collapsed):
    per = collapsed["json"]["per_model"]
    stuck = collapsed["stuck"]
    for model in ("letterbot", "clozebot"):
        labels = per[model]["predicted_labels"]
        counts = stuck["pred"].value_counts()
        assert labels["histogram"] == {k: int(counts.get(i, 0)) for i, k in enumerate("ABCD")}
        assert labels["top_label"] == "D" and labels["top_share"] == pytest.approx(counts[3] / len(stuck), abs=1e-4)
        assert labels["threshold"] == 0.6
        table = pd.DataFrame(labels["table"])
        assert list(table["label"]) == list("ABCD") and table["predicted"].sum() == len(stuck)
        assert table["correct_answer"].sum() == len(stuck)  # every prompt's correct answer, by position
        assert labels["warning"].startswith("answer D takes")
    assert "try scoring=cloze" in per["letterbot"]["predicted_labels"]["warning"]
    assert per["clozebot"]["predicted_labels"]["warning"].endswith(COLLAPSE_ADVICE["cloze"])
    assert per["spread"]["predicted_labels"]["warning"] is None
    assert per["spread"]["predicted_labels"]["top_share"] < 0.6


def test_report_html_shows_the_warning_in_each_collapsed_models_section(collapsed):
    page, per = collapsed["html"], collapsed["json"]["per_model"]
    sections = {m: page[page.index(f"<h2 id='{m}'>"):] for m in per}
    for model, text in sections.items():
        text = text[:text.index("<h2", 5)]  # up to the next section
        warning = per[model]["predicted_labels"]["warning"]
        assert "<h3>Predicted answers</h3>" in text
        assert (f"<b>Warning:</b> {html.escape(warning)}" in text) if warning else ("<b>Warning:</b>" not in text)
    assert page.count("id='letterbot-collapse'") == 1 and "id='spread-collapse'" not in page
