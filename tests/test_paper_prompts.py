"""The study's own prompts, character for character (prompt_format=paper_v1 | paper_v2 | paper), its question text
against its own sample, the sample's repeats as distinct prompts, and persona-free controls.

The golden strings are what the study's scripts (github.com/Jiaxin-Pei/Prompting-with-Social-Roles) return for the
question below, its options taken from the sample's option columns (which lack MMLU's trailing periods):
  v1  scripts/llm_inference_pipeline.py (commit 8fffd44): process_batch, lines 60-89
  v2  scripts/vllm_inference_pipeline.py (commit 0faaa74): format_choices lines 23-26, process_prompts lines 44-73
"""

import io
import logging
from importlib import resources

import pandas as pd
import pytest
import yaml
from helpers import CONF, SHARED, compose_cfg, dummy_cfg
from transformers import AutoTokenizer

from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.backends.dummy import DummyBackend
from persona_bench.config.schema import DatasetConfig
from persona_bench.inputs.dataset import load_questions
from persona_bench.inputs.prompts import (
    STUDY_PROMPTS,
    adds_default_system,
    bound_placement,
    make_prompter,
    render,
    resolve_format,
    study_prompt,
    study_question,
)
from persona_bench.inputs.questions import base_id, make_question, number_repeats
from persona_bench.inputs.roles import build_roles, build_templates, personas
from persona_bench.run import run
from persona_bench.run.items import build_items
from persona_bench.run.job import Job

# MMLU-style options: the first ends with the period MMLU has and the study's sample does not.
Q = make_question("college_biology", "Which organelle makes ATP?", ["Nucleus.", "Mitochondrion", "Ribosome", "Golgi"], 1)
PERSONA = "You are a doctor."  # "You are {indefinite} {role}." with role doctor (v1 line 116; v2 line 158)
V1_QUESTION = "Which organelle makes ATP? Options: 1. Nucleus, 2. Mitochondrion, 3. Ribosome, 4. Golgi."  # v1 lines 73-74
V2_QUESTION = "Which organelle makes ATP? Options: 1. Nucleus, 2. Mitochondrion, 3. Ribosome, 4. Golgi"  # v2 lines 23-26

ALPACA_PERSONA = "You will be presented with a role-playing context followed by a multiple-choice question. You are a doctor."
ALPACA_CONTROL = "You will be presented with a role-playing context followed by a multiple-choice question. "


def alpaca(context: str, question: str) -> str:
    """v1 line 61 (= v2 line 47, 'default'), after str.format: doubled braces print single, so the instruction sits
    in braces and the question in two (lines 81, 83)."""
    return ("Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\n{" + context +
            " Select only the option number that corresponds to the correct answer for the following question.}\n\n"
            "### Input:\n{{" + question + "} Provide the number of the correct option without explaining your "
            "reasoning.} \n\n### Response:")


INSTRUCTION = "The following is a multiple choice question (with answers). Reply with only the option number."

GOLDEN = {  # StudyPrompt name -> (persona prompt, control prompt); the control fills the persona with "" (v2 59-66)
    # v1 line 63, chosen for "t5" in the model's name (line 80), filled at line 81.
    "paper_v1/flan": (f"{PERSONA} {V1_QUESTION} Please select the correct answer number:",
                      f" {V1_QUESTION} Please select the correct answer number:"),
    # v1 line 61, for every other model (line 83): Llama-2-7b-chat, OPT-IML.
    "paper_v1/alpaca": (alpaca(ALPACA_PERSONA, V1_QUESTION), alpaca(ALPACA_CONTROL, V1_QUESTION)),
    # v2 line 47 'default', for families without a template of their own (line 68): OPT, and FLAN-T5 ('flan-t5').
    "paper_v2/default": (alpaca(ALPACA_PERSONA, V2_QUESTION), alpaca(ALPACA_CONTROL, V2_QUESTION)),
    # v2 line 48.
    "paper_v2/llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a doctor.<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{INSTRUCTION} {V2_QUESTION}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{INSTRUCTION} {V2_QUESTION}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    # v2 line 50.
    "paper_v2/mistral": (f"<s>[INST]You are a doctor. {INSTRUCTION}\n {V2_QUESTION}</s>[/INST]",
                         f"<s>[INST] {INSTRUCTION}\n {V2_QUESTION}</s>[/INST]"),
    # v2 line 51 (Qwen1.5-7B-Chat).
    "paper_v2/qwen": (f"<|system|>\nYou are a doctor. {INSTRUCTION}</s> \n<|user|>\n{V2_QUESTION}</s>\n<|assistant|>\n",
                      f"<|system|>\n {INSTRUCTION}</s> \n<|user|>\n{V2_QUESTION}</s>\n<|assistant|>\n"),
    # v2 line 52: the script writes "\\n", so the model got a backslash and an "n" where the turns should break.
    "paper_v2/qwen2.5": (
        f"<|im_start|>system\\nYou are a doctor. {INSTRUCTION}<|im_end|>\\n<|im_start|>user\\n{V2_QUESTION}"
        "<|im_end|>\\n<|im_start|>assistant\\n",
        f"<|im_start|>system\\n {INSTRUCTION}<|im_end|>\\n<|im_start|>user\\n{V2_QUESTION}"
        "<|im_end|>\\n<|im_start|>assistant\\n"),
}


def test_the_study_question_text_golden():
    assert study_question(Q, 1) == V1_QUESTION
    assert study_question(Q, 2) == V2_QUESTION


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_study_prompts_golden(name):
    study = STUDY_PROMPTS[name]
    question = V1_QUESTION if name.startswith("paper_v1") else V2_QUESTION
    assert (study.render(PERSONA, question), study.render(None, question)) == GOLDEN[name]


def test_every_study_prompt_has_a_golden():
    assert set(STUDY_PROMPTS) == set(GOLDEN)


# Which template each model config gets, and how its prompt is tokenized: the text-generation pipeline of 2023
# tokenized without special tokens (no BOS for v1's Llama-2 and OPT), text2text (FLAN-T5) and vLLM with them.
MODELS = {  # conf/model/<name>.yaml -> (format=paper resolves to, paper_v1's template, paper_v2's template)
    "flan": ("paper_v1", "paper_v1/flan", "paper_v2/default"),  # v2: family 'flan-t5' (line 169) has no template
    "llama2": ("paper_v1", "paper_v1/alpaca", "paper_v2/default"),  # v2: commented out (line 170)
    "opt": ("paper_v1", "paper_v1/alpaca", "paper_v2/default"),  # v2: family 'opt' (line 173), no template
    "opt_30b": ("paper_v1", "paper_v1/alpaca", "paper_v2/default"),
    "llama3": ("paper_v2", "paper_v1/alpaca", "paper_v2/llama3"),  # v2 line 171
    "mistral": ("paper_v2", "paper_v1/alpaca", "paper_v2/mistral"),  # v2 line 174
    "qwen2_5": ("paper_v2", "paper_v1/alpaca", "paper_v2/qwen2.5"),  # v2 lines 176-177
    "gemma3_270m": ("paper_adapted", "paper_v1/alpaca", "paper_v2/default"),  # not a model of the study
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_config_gets_the_study_template(name):
    m = compose_cfg([f"model={name}"]).model
    fmt, v1, v2 = MODELS[name]
    assert resolve_format("paper", m.path) == fmt
    assert study_prompt("paper_v1", m.path, m.arch).name == v1
    assert study_prompt("paper_v2", m.path, m.arch).name == v2
    paper = study_prompt("paper", m.path, m.arch)
    assert (paper.name if paper else None) == {"paper_v1": v1, "paper_v2": v2}.get(fmt)
    assert study_prompt("paper_adapted", m.path, m.arch) is None and study_prompt("mmlu", m.path, m.arch) is None


def test_tokenization_follows_the_study_pipelines():
    assert STUDY_PROMPTS["paper_v1/flan"].add_special and not STUDY_PROMPTS["paper_v1/alpaca"].add_special
    assert all(p.add_special for name, p in STUDY_PROMPTS.items() if name.startswith("paper_v2/"))


def test_model_names_match_hub_ids_and_local_copies():
    assert resolve_format("paper", "/models/Meta-Llama-3-8B-Instruct/") == "paper_v2"
    assert resolve_format("paper", "Qwen/Qwen2.5-72B-Instruct") == "paper_v2"
    assert resolve_format("paper", "meta-llama/Meta-Llama-3.1-8B-Instruct") == "paper_adapted"  # not in the study
    assert resolve_format("paper_v1", "anything") == "paper_v1" and resolve_format("mmlu", "x") == "mmlu"


def grid_job(cfg, questions):
    roles = build_roles(cfg.role_set)
    templates = build_templates(cfg.template)
    return Job(cfg, "generate", cfg.scoring.format, roles, templates, personas(roles, templates), questions)


@pytest.mark.parametrize("model,fmt,placement,start", [
    ("opt", "paper", "plain", "Below is an instruction"),
    ("flan", "paper", "plain", "You are a doctor. Which organelle"),
    ("opt", "paper_v2", "plain", "Below is an instruction"),
    ("gemma3_270m", "paper", "plain", f"{PERSONA}\n{INSTRUCTION}\n\n{V1_QUESTION}\nAnswer:"),  # paper_adapted
])
def test_the_runner_sends_the_study_prompts(model, fmt, placement, start):
    """Job.bind and build_items (the runner's own path) on the dummy tokenizer: the study's strings, placement and
    special tokens reach the requests."""
    cfg = compose_cfg([f"model={model}", f"scoring.format={fmt}", "role_set.names=[doctor]", "template=[speaker]"])
    job = grid_job(cfg, [Q])
    tok = DummyBackend().tokenizer
    assert job.bind(tok) == placement
    control, doctor = build_items(job, tok)
    assert doctor.prompt.startswith(start) and doctor.choices == ["1", "2", "3", "4"]
    study = study_prompt(fmt, cfg.model.path, cfg.model.arch)
    if study is not None:
        question = study_question(Q, 1 if study.name.startswith("paper_v1") else 2)
        assert (doctor.prompt, control.prompt) == (study.render(PERSONA, question), study.render(None, question))
        assert (doctor.request.prompt_ids[0] == tok.bos_token_id) == study.add_special


def test_a_study_chat_template_records_its_persona_turn(tiny_model_dir):
    """paper_v2 on Llama-3: the persona is in the hand-written template's system turn; the tokenizer's own chat
    template is not used for the prompt (only to confirm the self-pick question can use it)."""
    cfg = compose_cfg(["model=llama3", "scoring.format=paper_v2", "role_set.names=[doctor]", "template=[speaker]"])
    job = grid_job(cfg, [Q])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama", "system"))
    assert job.bind(tok) == "system"
    assert [it.prompt for it in build_items(job, tok)] == list(reversed(GOLDEN["paper_v2/llama3"]))
    assert job.bind(DummyBackend().tokenizer) == "plain"  # no chat template: other prompts go as plain text


# -- the study's question text against its own sample --------------------------------------------------------------
# Reads the study's data file /work/shared/paper-data/question_split.csv (beside the checkout; never copied into it).
@pytest.mark.skipif(not (SHARED / "question_split.csv").exists(), reason="paper data not beside the checkout")
def test_question_text_equals_the_samples_full_question():
    rows = load_questions(DatasetConfig(name="mmlu_paper", sample="mmlu_paper", dedupe=False))
    paper = pd.read_csv(SHARED / "question_split.csv", keep_default_na=False)  # reads the shared folder
    assert len(rows) == len(paper) == 2457
    assert [study_question(q, 1) for q in rows] == paper["full_question"].tolist()  # all 2,457, in order
    # With MMLU's options as they are, 861 rows would differ ("disease., 2. ...").
    raw = [f"{q.question} Options: " + ", ".join(f"{i}. {c}" for i, c in enumerate(q.choices, 1)) + "." for q in rows]
    assert sum(a != b for a, b in zip(raw, paper["full_question"])) == 861


# -- the sample's repeats ------------------------------------------------------------------------------------------
def shipped_sample() -> pd.DataFrame:
    with resources.files("persona_bench.resources").joinpath("mmlu_paper_sample.csv").open("rb") as fh:
        return pd.read_csv(io.BytesIO(fh.read()), keep_default_na=False, dtype={"content_hash": str})


def test_the_samples_repeats_are_counted_right():
    s = shipped_sample()
    repeats = s[s.duplicated("content_hash")]  # a row whose question and options came earlier, in any subject
    within = s.duplicated(["subject", "content_hash"])
    assert (len(s), s.content_hash.nunique(), len(repeats), int(within.sum())) == (2457, 2410, 47, 27)
    across = repeats[~within[repeats.index]]
    assert len(across) == 20 and set(across.subject) == {"college_medicine"}  # first seen in clinical_knowledge
    assert int(s["duplicate"].sum()) == 27  # the shipped column marks the within-subject repeats only


def test_repeats_keep_one_identity_each():
    a = make_question("anatomy", "Q?", ["x", "y"], 0)
    b = make_question("virology", "Q?", ["x", "y"], 0)
    out = number_repeats([a, a, b, a])
    assert [q.id for q in out] == [a.id, a.id + "#2", b.id, a.id + "#3"] and out[3].meta["occurrence"] == 3
    assert base_id(out[1].id) == a.id


def test_the_paper_sample_keeps_every_row_with_dedupe_false():
    rows = load_questions(DatasetConfig(name="mmlu_paper", sample="mmlu_paper", dedupe=False))
    ids = [q.id for q in rows]
    assert len(ids) == len(set(ids)) == 2457  # every sample row is its own question in the grid
    assert sum("#" in i for i in ids) == 27 and len({base_id(i) for i in ids}) == 2430
    assert len(load_questions(DatasetConfig(name="mmlu_paper", sample="mmlu_paper", dedupe=True))) == 2410


def test_a_repeated_question_is_scored_and_analysed_per_row(tmp_path):
    """A sample with a question twice in one subject (and one in two subjects): with dedupe=false every row is
    its own prompt in predictions.parquet and the persona matrix; with dedupe=true the repeats go."""
    s = shipped_sample()
    hs = s[s.subject == "high_school_physics"]
    pair = hs[hs.duplicated("content_hash", keep=False)].head(2)
    in_both = s.loc[(s.subject == "college_medicine")
                    & s.content_hash.isin(s.loc[s.subject == "clinical_knowledge", "content_hash"]), "content_hash"]
    cross = s[s.content_hash == in_both.iloc[0]]  # the same question in clinical_knowledge and college_medicine
    mine = pd.concat([s.iloc[[0]], pair, cross])[["subject", "content_hash", "answer", "split"]]
    sample = tmp_path / "sample.csv"
    mine.to_csv(sample, index=False)
    n = {}
    for dedupe in (False, True):
        out = tmp_path / str(dedupe)
        cfg = dummy_cfg(out, dataset__sample=str(sample), dataset__subjects=None, dataset__per_subject=None,
                        dataset__dedupe=dedupe)
        run(cfg, DummyBackend())
        df = pd.read_parquet(out / "predictions.parquet")
        assert not df.duplicated(["question_id", "template", "role"]).any()
        n[dedupe] = df["question_id"].nunique()
        PersonaMatrix.from_predictions(df)  # refuses duplicate (question, template, role) rows
        if not dedupe:
            twice = [q for q in df["question_id"].unique() if q.endswith("#2")]
            assert len(twice) == 1 and base_id(twice[0]) in set(df["question_id"])
    assert n == {False: 5, True: 3}


# -- persona-free controls -----------------------------------------------------------------------------------------
# Whether each config's chat template writes a system prompt of its own when the messages have none (the hub's
# tokenizer_config.json chat_template of the config's model): then the control needs control_system=empty.
DEFAULT_SYSTEM_PROMPT = {
    "flan": None,  # no chat template (T5): plain text, no system turn
    "gemma3_270m": None,  # a base model: no chat template
    "opt": None, "opt_30b": None,  # no chat template
    "llama2": False,  # Llama-2-7b-chat-hf: its default system prompt is behind `false == true` (never rendered)
    "llama3": False,  # Meta-Llama-3-8B-Instruct: no system header unless one is given (unlike Llama 3.1's dated one)
    "mistral": False,  # Mistral-7B-Instruct-v0.2: no system turn of its own
    "qwen2_5": True,  # "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    # model=hf: any model, so unknown until its tokenizer loads; the plan and the load warn when its template
    # adds a system prompt of its own, naming model.control_system=empty (bound_placement, models/hub.py)
    "hf": None,
}


def test_every_model_config_has_a_persona_free_control():
    names = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
    assert set(names) == set(DEFAULT_SYSTEM_PROMPT), "a new model config: add its chat template's behaviour here"
    for name in names:
        expected = "empty" if DEFAULT_SYSTEM_PROMPT[name] else "none"
        if name == "hf":  # its other keys need model.path and the model's config.json to compose
            assert yaml.safe_load((CONF / "model" / "hf.yaml").read_text())["control_system"] == expected
            continue
        assert compose_cfg([f"model={name}"]).model.control_system == expected, name


QWEN_LIKE = (  # Qwen2.5's behaviour on the tiny tokenizer's tokens: a default system turn when none is given
    "{% if messages[0]['role'] == 'system' %}{{ '<|system|>\n' + messages[0]['content'] + '<|end|>\n' }}"
    "{% else %}{{ '<|system|>\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|end|>\n' }}"
    "{% endif %}{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def test_an_injected_default_system_prompt_is_found_and_kept_out_of_the_control(tiny_model_dir, caplog):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama", "system"))
    assert not adds_default_system(tok)
    tok.chat_template = QWEN_LIKE
    assert adds_default_system(tok)
    assert "You are Qwen" in render(tok, None, "Q?", "system", control_system="none")[0]
    control = render(tok, None, "Q?", "system", control_system="empty")[0]
    assert control == "<|system|>\n<|end|>\n<|user|>\nQ?<|end|>\n<|assistant|>\n"  # no system text at all
    qwen = compose_cfg(["model=qwen2_5"]).model
    with caplog.at_level(logging.WARNING, logger="persona_bench.inputs.prompts"):
        assert bound_placement(tok, qwen, "mmlu") == "system"
        assert not caplog.records  # control_system=empty: nothing to warn about
        qwen.control_system = "none"
        bound_placement(tok, qwen, "mmlu")
    assert "not persona-free" in caplog.text
    prompter = make_prompter("mmlu", compose_cfg(["model=qwen2_5"]).model, "system")
    text, _ = prompter.render(tok, None, prompter.body(Q))
    assert "You are Qwen" not in text and text.startswith("<|system|>\n<|end|>\n")
