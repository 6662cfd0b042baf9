"""Mechanism measures (persona sentences, word frequency, similarity, correlations) and persona perplexity."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import BagOfWords
from scipy import stats
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from persona_bench.analysis import mechanisms as M
from persona_bench.analysis.effects import persona_effects
from persona_bench.inputs.roles import Role, Template, persona_texts
from persona_bench.scoring.perplexity import main as perplexity_main
from persona_bench.scoring.perplexity import persona_perplexity, write_perplexity

ROLES = [
    {"name": "economist", "category": "occupation", "frequency": 1e-5},
    {"name": "AI model", "category": "ai", "frequency": None},
    {"name": "mother", "category": "family", "interpersonal": True, "frequency": 2e-4},
    {"name": "heir", "category": "family", "interpersonal": True},  # no frequency key at all
]
TEMPLATES = {"control": "", "speaker": "You are {a} {role}.", "audience": "You are talking to {a} {role}."}


def test_persona_texts_render_as_the_run_and_respect_interpersonal_only():
    t = persona_texts(TEMPLATES, ROLES)
    got = dict(zip(zip(t.template, t.role), t.text))
    assert got[("speaker", "economist")] == "You are an economist."
    assert got[("speaker", "AI model")] == "You are an AI model."
    assert got[("audience", "heir")] == "You are talking to an heir."
    assert "control" not in set(t.template) and len(t) == 8
    role = M.as_role(ROLES[0])
    assert got[("speaker", "economist")] == Template("speaker", TEMPLATES["speaker"]).render(role)
    # job.json's identity.template form: interpersonal_only templates skip other roles
    t2 = persona_texts({"speaker": {"text": "You are {a} {role}.", "interpersonal_only": False},
                          "your": {"text": "You are my {role}.", "interpersonal_only": True}}, ROLES)
    assert set(t2[t2.template == "your"].role) == {"mother", "heir"}
    # a Role object with an explicit article is used as is
    r = Role("umpire", "occupation", None, (), "unknown", False, False, None, None, "an")
    assert persona_texts({"speaker": "You are {a} {role}."}, [r]).text.tolist() == ["You are an umpire."]


def test_role_frequencies():
    f = M.role_frequencies(ROLES).set_index("role")
    assert f.loc["mother", "wordfreq_zipf"] > f.loc["economist", "wordfreq_zipf"] > 0
    assert f.loc["AI model", "wordfreq_zipf"] > 0  # multiword names get a frequency too
    assert f.loc["economist", "ngram_frequency"] == 1e-5
    assert f["ngram_frequency"].isna().tolist() == [False, True, False, True]


def predictions():
    """3 questions; control and 2 personas; persona 'speaker/doctor' right on q1, q2."""
    rows = []
    ctrl = {"q0": True, "q1": False, "q2": False}
    for q, c in ctrl.items():
        rows.append(dict(question_id=q, subject="s", template="control", role=None, correct=c,
                         prompt=f"Question: medicine {q}\nAnswer:"))
        rows.append(dict(question_id=q, subject="s", template="speaker", role="doctor", correct=q != "q0",
                         prompt=f"You are a doctor.\nQuestion: medicine {q}\nAnswer:"))
        rows.append(dict(question_id=q, subject="s", template="speaker", role="judge", correct=False,
                         prompt=f"You are a judge.\nQuestion: medicine {q}\nAnswer:"))
    return pd.DataFrame(rows)


def test_question_texts_and_effects():
    df = predictions()
    q = M.question_texts(df)
    assert list(q.index) == ["q0", "q1", "q2"] and q["q1"] == "Question: medicine q1\nAnswer:"
    e = persona_effects(df, n_boot=10).set_index("role")  # the analysis' effects, as the report correlates them
    assert e.loc["doctor", "accuracy"] == pytest.approx(2 / 3)
    assert e.loc["doctor", "control_accuracy"] == pytest.approx(1 / 3)
    assert e.loc["doctor", "delta"] == pytest.approx(1 / 3)
    assert e.loc["judge", "delta"] == pytest.approx(-1 / 3)


def test_similarity_is_mean_cosine_to_the_control_prompts():
    df = predictions()
    texts = pd.DataFrame({"template": ["speaker", "speaker"], "role": ["doctor", "judge"],
                          "text": ["You are a doctor.", "medicine question answer"]})
    personas, qids, s = M.similarity_matrix(df, texts, BagOfWords())
    assert s.shape == (2, 3) and list(qids) == ["q0", "q1", "q2"]
    enc = BagOfWords()
    v = enc.encode(["medicine question answer", "Question: medicine q2\nAnswer:"])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert s[1, 2] == pytest.approx(v[0] @ v[1])
    sim = M.similarity(df, texts, BagOfWords()).set_index("role")["similarity"]
    assert sim["doctor"] == pytest.approx(s[0].mean())
    assert sim["judge"] > sim["doctor"]


def test_correlations_match_scipy_and_fisher_ci():
    rng = np.random.default_rng(0)
    roles = [f"r{i}" for i in range(12)]
    x = rng.normal(size=12)
    effects = pd.DataFrame({"template": "speaker", "role": roles, "delta": 0.5 * x + rng.normal(size=12) * 0.3,
                            "accuracy": 0.5})
    measures = pd.DataFrame({"role": roles, "wordfreq_zipf": x, "ngram_frequency": 10.0 ** x,
                             "constant": 1.0})
    c = M.correlations(effects, measures).set_index("measure")
    r, p = stats.pearsonr(x, effects.delta)
    assert c.loc["wordfreq_zipf", "pearson_r"] == pytest.approx(r, abs=1e-6)
    assert c.loc["wordfreq_zipf", "p"] == pytest.approx(p, abs=1e-6)
    assert c.loc["wordfreq_zipf", "spearman_rho"] == pytest.approx(stats.spearmanr(x, effects.delta)[0], abs=1e-6)
    z, se = math.atanh(r), 1 / math.sqrt(12 - 3)
    assert c.loc["wordfreq_zipf", "ci_low"] == pytest.approx(math.tanh(z - 1.959964 * se), abs=1e-5)
    assert c.loc["wordfreq_zipf", "ci_high"] == pytest.approx(math.tanh(z + 1.959964 * se), abs=1e-5)
    # ngram frequency is correlated on log10: the same as x
    assert c.loc["log10_ngram_frequency", "pearson_r"] == pytest.approx(r, abs=1e-6)
    assert pd.isna(c.loc["constant", "pearson_r"]) and c.loc["constant", "n"] == 12
    # a measure missing for some personas: n counts the others; role-keyed measures apply to every template;
    # one point per role by default (n counts roles), one per persona with unit="persona"
    both = pd.concat([effects, effects.assign(template="audience", delta=effects.delta + rng.normal(size=12) * 0.1)])
    m2 = measures.assign(ngram_frequency=[None] * 3 + list(10.0 ** x[3:]))
    c2 = M.correlations(both, m2).set_index("measure")
    assert c2.loc["log10_ngram_frequency", "n"] == 9 and c2.loc["wordfreq_zipf", "n"] == 12
    role_delta = both.groupby("role")["delta"].mean().loc[roles]
    assert c2.loc["wordfreq_zipf", "pearson_r"] == pytest.approx(stats.pearsonr(x, role_delta)[0], abs=1e-6)
    assert c2.loc["wordfreq_zipf", "p"] == pytest.approx(stats.pearsonr(x, role_delta)[1], abs=1e-6)
    c2p = M.correlations(both, m2, unit="persona").set_index("measure")
    assert c2p.loc["log10_ngram_frequency", "n"] == 18 and c2p.loc["wordfreq_zipf", "n"] == 24
    # (template, role)-keyed measures; perplexity is correlated as log
    ppl = effects[["template", "role"]].assign(perplexity=np.exp(x))
    c3 = M.correlations(effects, ppl).set_index("measure")
    assert c3.loc["log_perplexity", "pearson_r"] == pytest.approx(r, abs=1e-6)


def test_real_minilm_puts_a_doctor_near_medicine():
    df = pd.DataFrame([
        dict(question_id="m", template="control", role=None, prompt="Which drug treats a bacterial infection in a patient?"),
        dict(question_id="l", template="control", role=None, prompt="Which court hears appeals of a criminal conviction?"),
    ])
    texts = pd.DataFrame({"template": ["speaker"] * 2, "role": ["doctor", "lawyer"],
                          "text": ["You are a doctor.", "You are a lawyer."]})
    _, qids, s = M.similarity_matrix(df, texts)  # the real all-MiniLM-L6-v2
    assert list(qids) == ["l", "m"]
    assert s[0, 1] > s[0, 0] and s[1, 0] > s[1, 1]  # doctor nearer medicine, lawyer nearer law
    v = M.embed(["You are a doctor."])
    assert v.shape == (1, 384) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)


def test_minilm_gives_the_vectors_sentence_transformers_gives():
    """Our plain-transformers MiniLM (mean pooling, unit length) against values that
    sentence-transformers 6.2.0 printed for the same texts (batched together, different lengths)."""
    v = M.embed(["You are a doctor.", "Question: Which drug treats a bacterial infection in a patient?\nAnswer:"])
    assert v[0, :4] == pytest.approx([0.043275, 0.006038, 0.062778, 0.02841], abs=2e-6)
    assert v[1, :4] == pytest.approx([0.00016, -0.008833, -0.047063, -0.059033], abs=2e-6)


# --------------------------------------------------------------------------- perplexity

SENTENCES = ["You are a doctor.", "You are talking to an economist.", "You are a helpful assistant.", "You are a child."]


def naive_causal(model, tok, text):
    """Hand-computed: -log p(token_t | tokens_<t) one sentence at a time, BOS in front, no batching."""
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False).input_ids
    logits = model(torch.tensor([ids])).logits[0]
    nll = [-torch.log_softmax(logits[t - 1].double(), -1)[ids[t]].item() for t in range(1, len(ids))]
    hf = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()  # transformers' own shifted loss
    return len(nll), sum(nll) / len(nll), hf


def naive_seq2seq(model, tok, text):
    enc = tok("").input_ids
    assert enc == [tok.eos_token_id]
    target = tok(text, add_special_tokens=False).input_ids
    dec = [model.config.decoder_start_token_id] + target
    logits = model(input_ids=torch.tensor([enc]), decoder_input_ids=torch.tensor([dec])).logits[0]
    nll = [-torch.log_softmax(logits[t].double(), -1)[target[t]].item() for t in range(len(target))]
    hf = model(input_ids=torch.tensor([enc]), labels=torch.tensor([target])).loss.item()
    return len(nll), sum(nll) / len(nll), hf


@pytest.mark.parametrize("arch", ["llama", "opt", "t5"])
def test_perplexity_is_exp_of_the_naive_token_loss(tiny_model_dir, arch):
    d = tiny_model_dir(arch)
    auto = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM
    model, tok = auto.from_pretrained(d, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(d)
    kind = "seq2seq" if arch == "t5" else "causal"
    got = persona_perplexity(model, tok, SENTENCES, kind, "cpu", batch_size=3)  # mixed lengths, two batches
    for text, g in zip(SENTENCES, got):
        with torch.no_grad():
            n, nll, hf = (naive_seq2seq if arch == "t5" else naive_causal)(model, tok, text)
        assert g["n_tokens"] == n
        assert g["nll_mean"] == pytest.approx(nll, abs=1e-5)
        assert g["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
        assert g["perplexity"] == pytest.approx(math.exp(hf), rel=1e-4)


def test_write_perplexity_and_command_on_a_run_dir(tiny_model_dir, tmp_path, capsys):
    d = tiny_model_dir("llama")
    run = tmp_path / "run"
    run.mkdir()
    identity = {
        "model": {"name": "tiny", "path": str(d), "source": "local", "arch": "causal", "dtype": "fp32"},
        "template": {"speaker": {"text": "You are {a} {role}.", "interpersonal_only": False}},
        "role_set": {"name": "t", "select": {}, "names": ["economist", "doctor"], "domains": {},
                     "roles": [{"name": "doctor", "category": "occupation"}, {"name": "economist", "category": "occupation"},
                               {"name": "nurse", "category": "occupation"}]},
    }
    (run / "job.json").write_text(json.dumps({"config_id": "x", "identity": identity}))
    assert perplexity_main([str(run), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("loading model tiny: path " + str(d)) < printed.index("perplexity.parquet")
    assert "dtype fp32" in printed
    table = pd.read_parquet(run / "perplexity.parquet")
    assert list(table.role) == ["economist", "doctor"]  # role_set.names order; nurse not in the run
    assert list(table.text) == ["You are an economist.", "You are a doctor."]
    model, tok = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(d)
    ref = persona_perplexity(model, tok, list(table.text), "causal")
    assert table.perplexity.tolist() == pytest.approx([r["perplexity"] for r in ref], rel=1e-5)
    again = write_perplexity(tmp_path, table[["template", "role", "text"]], ref)
    assert again.columns.tolist() == ["template", "role", "text", "n_tokens", "nll_mean", "perplexity"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_persona_texts_from_dataframe_records_with_missing_values():
    roles = pd.DataFrame([{"name": "economist", "article": None, "interpersonal": None, "frequency": None},
                          {"name": "mother", "article": None, "interpersonal": True, "frequency": 2e-4}])
    recs = roles.to_dict("records")  # missing values come back as NaN
    t = persona_texts({"speaker": "You are {a} {role}.", "your": {"text": "You are my {role}.",
                                                                   "interpersonal_only": True}}, recs)
    assert t.text.tolist() == ["You are an economist.", "You are a mother.", "You are my mother."]
    assert M.role_frequencies(recs)["ngram_frequency"].isna().tolist() == [True, False]


def test_correlations_of_columns_of_one_table():
    pts = pd.DataFrame({"template": "speaker", "role": list("abcdef"), "delta": [1, 2, 3, 4, 5, 7.0],
                        "accuracy": 0.5, "log_perplexity": [6, 5, 4, 3, 2, 1.0], "similarity": [None] * 6})
    c = M.correlations(pts, ["log_perplexity", "similarity"]).set_index("measure")
    assert c.loc["log_perplexity", "spearman_rho"] == pytest.approx(-1.0)
    assert c.loc["log_perplexity", "pearson_r"] == pytest.approx(stats.pearsonr(pts.log_perplexity, pts.delta)[0], abs=1e-6)
    assert c.loc["similarity", "n"] == 0
