"""Golden prompts per template and placement; the persona is never dropped."""

import pytest
from transformers import AutoTokenizer

from persona_bench.config.errors import ConfigError
from persona_bench.config.schema import RoleConfig, RoleSetConfig, TemplateConfig
from persona_bench.inputs.prompts import (
    continuation,
    question_body,
    render,
    resolve_placement,
    system_turn_support,
)
from persona_bench.inputs.questions import make_question
from persona_bench.inputs.roles import article, build_roles, build_templates, personas

Q = make_question("college_biology", "Which organelle makes ATP?", ["Nucleus", "Mitochondrion", "Ribosome", "Golgi"], 1)

TEMPLATES = {
    "speaker": "You are {a} {role}.",
    "audience": "You are talking to {a} {role}.",
    "interpersonal": "You are talking to your {role}.",
    "imagine_speaker": "Imagine you are {a} {role}.",
    "imagine_audience": "Imagine you are talking to {a} {role}.",
}


def roles(*names, **attrs):
    cat = [RoleConfig(name=n, category="family" if n in ("mother", "uncle") else "work",
                      interpersonal=n in ("mother", "uncle")) for n in names]
    return build_roles(RoleSetConfig(name="t", roles=cat))


def test_body_formats_golden():
    assert question_body(Q, "mmlu").text == (
        "The following are multiple choice questions (with answers) about college biology.\n\n"
        "Which organelle makes ATP?\nA. Nucleus\nB. Mitochondrion\nC. Ribosome\nD. Golgi\nAnswer:"
    )
    assert question_body(Q, "mmlu", subject_header=False).labels == ("A", "B", "C", "D")
    paper = question_body(Q, "paper")
    assert paper.text == (
        "The following is a multiple choice question (with answers). Reply with only the option number.\n\n"
        "Which organelle makes ATP? Options: 1. Nucleus, 2. Mitochondrion, 3. Ribosome, 4. Golgi.\nAnswer:")
    assert paper.labels == ("1", "2", "3", "4")
    cloze = question_body(Q, "cloze")
    assert cloze.text == "Question: Which organelle makes ATP?\nAnswer:" and cloze.options == tuple(Q.choices)


@pytest.mark.parametrize("name,expected", list({
    "speaker": "You are a doctor.",
    "audience": "You are talking to a doctor.",
    "interpersonal": "You are talking to your doctor.",
    "imagine_speaker": "Imagine you are a doctor.",
    "imagine_audience": "Imagine you are talking to a doctor.",
}.items()))
def test_template_golden(name, expected):
    (t,) = build_templates({name: TemplateConfig(text=TEMPLATES[name])})[1:]
    assert t.render(roles("doctor")[0]) == expected


@pytest.mark.parametrize("word,art", [
    ("doctor", "a"), ("economist", "an"), ("AI language model", "an"), ("CEO", "a"), ("university professor", "a"),
    ("honest broker", "an"), ("uncle", "an"), ("Educational Tutor AI", "an"), ("historian", "a"), ("user", "a"),
])
def test_article_by_pronunciation(word, art):
    assert article(word) == art


def test_interpersonal_template_only_for_interpersonal_roles_and_control_first():
    ts = build_templates({"interpersonal": TemplateConfig(text=TEMPLATES["interpersonal"], interpersonal_only=True),
                          "speaker": TemplateConfig(text=TEMPLATES["speaker"])})
    grid = personas(roles("sheriff", "mother"), ts)
    assert [(t.name, r and r.name) for t, r in grid] == [
        ("control", None), ("interpersonal", "mother"), ("speaker", "sheriff"), ("speaker", "mother")]


def test_plain_placement_golden():
    body = question_body(Q, "cloze").text
    assert render(None, "You are a doctor.", body, "plain") == (
        "You are a doctor.\nQuestion: Which organelle makes ATP?\nAnswer:", True)
    assert render(None, None, body, "plain") == ("Question: Which organelle makes ATP?\nAnswer:", True)


def test_system_placement_golden(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama", "system"))
    assert resolve_placement(tok, "auto") == "system"
    text, special = render(tok, "You are a doctor.", "Q?\nAnswer:", "system")
    assert text == "<|system|>\nYou are a doctor.<|end|>\n<|user|>\nQ?\nAnswer:<|end|>\n<|assistant|>\n"
    assert special is False  # the template carries its own special tokens
    assert render(tok, None, "Q?\nAnswer:", "system")[0] == "<|user|>\nQ?\nAnswer:<|end|>\n<|assistant|>\n"
    assert render(tok, None, "Q?", "system", control_system="empty")[0].startswith("<|system|>\n<|end|>")


@pytest.mark.parametrize("kind,support", [("no_system", "rejects"), ("drops_system", "drops")])
def test_persona_merged_into_user_turn_when_template_rejects_or_drops_system(tiny_model_dir, kind, support):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama", kind))
    assert system_turn_support(tok) == support
    assert resolve_placement(tok, "auto") == "user"
    text, _ = render(tok, "You are a doctor.", "Q?\nAnswer:", "user")
    assert "<|user|>\nYou are a doctor.\nQ?\nAnswer:<|end|>\n<|assistant|>\n" in text
    with pytest.raises(ConfigError, match="lose the persona"):
        resolve_placement(tok, "system")


def test_no_chat_template_means_plain(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("opt"))
    assert resolve_placement(tok, "auto") == "plain"
    with pytest.raises(ConfigError, match="no chat template"):
        resolve_placement(tok, "user")


def test_continuation_spacing():
    assert continuation("Answer:", "Paris") == " Paris"
    assert continuation("<|assistant|>\n", "A") == "A"


PAPER_QUESTION = ("The following is a multiple choice question (with answers). Reply with only the option number.\n\n"
                  "Which organelle makes ATP? Options: 1. Nucleus, 2. Mitochondrion, 3. Ribosome, 4. Golgi.")


def test_paper_format_through_a_chat_template_golden(tiny_model_dir):
    """paper_adapted (format=paper for a model the study did not run; the study's own prompts are in
    test_paper_prompts.py): the persona as the system turn, the study's instruction and question text as the user
    turn, and no "Answer:" cue: the template's own generation prompt says whose turn it is."""
    from persona_bench.inputs.prompts import paper_cue

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama", "system"))
    body = question_body(Q, "paper", cue=paper_cue("system", "causal"))
    assert body.text == PAPER_QUESTION and body.labels == ("1", "2", "3", "4")
    assert question_body(Q, "paper_adapted", cue="") == body
    text, special = render(tok, "You are a doctor.", body.text, "system")
    assert text == (f"<|system|>\nYou are a doctor.<|end|>\n<|user|>\n{PAPER_QUESTION}<|end|>\n<|assistant|>\n")
    assert special is False


@pytest.mark.parametrize("placement,arch,ending", [
    ("plain", "seq2seq", "\nPlease select the correct answer number:"),  # FLAN-T5, as the study prompted it
    ("plain", "causal", "\nAnswer:"),  # a base model continues "Answer:"
    ("user", "causal", ""),
])
def test_paper_format_endings_by_model_family(placement, arch, ending):
    from persona_bench.inputs.prompts import paper_cue

    assert question_body(Q, "paper", cue=paper_cue(placement, arch)).text == PAPER_QUESTION + ending
