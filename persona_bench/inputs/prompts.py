"""Prompts as messages, and where the persona goes.

A prompt is a persona (possibly none: the control) plus a question body. How the
persona reaches the model is the placement policy, recorded on every result row:

  system  the chat template's system turn (chat models that accept one)
  user    merged into the user turn, persona first (chat templates that reject a
          system turn, or silently drop it): the persona is never dropped
  plain   plain text, persona line then question (base models, FLAN-T5)

`auto` picks `system` when the tokenizer's chat template renders a system turn,
`user` when it has a chat template that rejects or drops one, `plain` otherwise.

The study's own prompts (scoring.format=paper_v1 | paper_v2, and paper for the models the
study ran) bypass the placement policy: the study's scripts wrote each prompt as one string,
persona included, and `StudyPrompt` reproduces those strings character for character
(docs/paper-mode.md). Their persona placement is recorded as the study's (plain, system or
user turn of the hand-written template).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from persona_bench.config.errors import ConfigError
from persona_bench.inputs.questions import LETTERS, Question

log = logging.getLogger(__name__)

_SENTINEL = "PERSONA-SENTINEL-7f3a"
MMLU_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
# The study's (arXiv 2311.10054) instruction, and FLAN's closing line (its scripts, below).
PAPER_INSTRUCTION = "The following is a multiple choice question (with answers). Reply with only the option number."
FLAN_CUE = "Please select the correct answer number:"

# scoring.format values of the paper family: paper picks paper_v1 or paper_v2 for the models the study ran
# and paper_adapted for the others (resolve_format).
PAPER_FORMATS = ("paper", "paper_v1", "paper_v2", "paper_adapted")


@dataclass(frozen=True)
class Body:
    text: str  # the question as the user turn (or the text after the persona)
    labels: tuple[str, ...]  # answer labels (letter/number formats), one per choice
    options: tuple[str, ...]  # the options' text, for cloze continuations


def paper_cue(placement: str, arch: str) -> str:
    """How a paper-format question ends: nothing after a chat template's generation prompt (the
    template says whose turn it is), FLAN's "Please select the correct answer number:" for plain-text
    encoder-decoders, "Answer:" for plain-text base models (the cue a base model continues)."""
    if placement in ("system", "user"):
        return ""
    return "\n" + FLAN_CUE if arch == "seq2seq" else "\nAnswer:"


def study_option(text: str) -> str:
    """An option as the study's sample shows it: MMLU's text without its trailing periods. The study's
    mmlu_sample_ques.csv has no option ending in "." (3,277 of its 9,828 options do in MMLU) and otherwise
    MMLU's text exactly; its prompts joined these (tests/test_paper_prompts.py checks every sample row)."""
    return str(text).rstrip(".")


def study_question(q: Question, generation: int = 1) -> str:
    """The question with its numbered options inline, as the study's scripts built it from the question
    and option columns of its sample: "<question> Options: 1. <a>, 2. <b>, 3. <c>, 4. <d>", closed by "."
    in the first generation (scripts/llm_inference_pipeline.py lines 73-74; the sample's full_question
    column) and not in the second (scripts/vllm_inference_pipeline.py lines 23-26)."""
    opts = ", ".join(f"{i}. {study_option(c)}" for i, c in enumerate(q.choices, 1))
    return f"{q.question} Options: {opts}" + ("." if generation == 1 else "")


def question_body(q: Question, fmt: str, subject_header: bool = True, cue: str = "\nAnswer:") -> Body:
    """The question in one of the formats: mmlu (A-D); paper_adapted, or paper before resolve_format
    (1-4: the study's instruction, then the study's question text, then `cue`: see paper_cue); paper_v1 /
    paper_v2 (the study's question text alone: its StudyPrompt wraps it); cloze (no options listed)."""
    n = len(q.choices)
    numbers = tuple(str(i + 1) for i in range(n))
    if fmt == "mmlu":
        head = MMLU_HEADER.format(subject=q.subject.replace("_", " ")) if subject_header else ""
        lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(q.choices)]
        return Body(head + q.question.strip() + "\n" + "\n".join(lines) + "\nAnswer:", tuple(LETTERS[:n]), tuple(q.choices))
    if fmt in ("paper", "paper_adapted"):  # the study's instruction and question text, for any model
        return Body(f"{PAPER_INSTRUCTION}\n\n{study_question(q, 1)}{cue}", numbers, tuple(q.choices))
    if fmt in ("paper_v1", "paper_v2"):
        return Body(study_question(q, 1 if fmt == "paper_v1" else 2), numbers, tuple(q.choices))
    if fmt == "cloze":  # lm-evaluation-harness's mmlu_continuation
        return Body(f"Question: {q.question.strip()}\nAnswer:", (), tuple(q.choices))
    raise ConfigError(f"scoring.format={fmt!r}; valid: mmlu, {', '.join(PAPER_FORMATS)}, cloze")


# -- the study's own prompts ------------------------------------------------------------------------
# The study's scripts (github.com/Jiaxin-Pei/Prompting-with-Social-Roles) come in two generations:
#   v1  scripts/llm_inference_pipeline.py: transformers pipelines; FLAN-T5 got "{persona} {question}
#       Please select the correct answer number:" (line 63, chosen by "t5" in the model's name at line 80),
#       every other model (Llama-2-7b-chat, OPT-IML) an Alpaca-style instruction with the persona inside
#       it (line 61). The persona and question are filled in by str.format (lines 81, 83), so the doubled
#       braces of the Alpaca string print as literal braces.
#   v2  scripts/vllm_inference_pipeline.py: vLLM; one template per model family (lines 46-53), chosen by
#       the family of the model's hub id (lines 169-178, 181) with 'default' (the Alpaca string again)
#       for a family without a template of its own (line 68): OPT, and FLAN-T5, whose family key
#       'flan-t5' is not the template table's 'flan'. The control fills the persona with "" (lines 59-66).
# A template here is head + persona + mid + question + tail (the persona always precedes the question).

_ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n"
    "{You will be presented with a role-playing context followed by a multiple-choice question. ",
    " Select only the option number that corresponds to the correct answer for the following question.}"
    "\n\n### Input:\n{{",
    "} Provide the number of the correct option without explaining your reasoning.} \n\n### Response:",
)


@dataclass(frozen=True)
class StudyPrompt:
    """One of the study's prompt templates, exactly as its script sent it."""
    name: str  # paper_v1/flan, paper_v1/alpaca, paper_v2/<template key of the script>
    head: str
    mid: str
    tail: str
    placement: str  # where the persona sits: plain (one text, no chat turns), system or user (a turn of the template)
    add_special: bool  # the tokenizer adds its special tokens (BOS/EOS), as the study's pipeline tokenized

    def render(self, persona: Optional[str], question: str) -> str:
        """The prompt; the control (persona None) gets "" where the persona goes, as the study's v2 script did."""
        return f"{self.head}{persona or ''}{self.mid}{question}{self.tail}"


# Tokenization: transformers' text2text pipeline (FLAN-T5, v1) tokenizes with the tokenizer's special tokens
# (T5's closing </s>); its text-generation pipeline of 2023 (transformers < 4.40: add_special_tokens=False)
# without them, so v1's Llama-2 and OPT prompts had no BOS; vLLM's generate() on a string (v2) adds them, so
# the Llama-3 and Mistral prompts, which write their own BOS, carried two.
STUDY_PROMPTS = {p.name: p for p in (
    StudyPrompt("paper_v1/flan", "", " ", " " + FLAN_CUE, "plain", True),
    StudyPrompt("paper_v1/alpaca", *_ALPACA, "plain", False),
    StudyPrompt("paper_v2/default", *_ALPACA, "plain", True),
    StudyPrompt("paper_v2/llama3", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
                "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" + PAPER_INSTRUCTION + " ",
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "system", True),
    StudyPrompt("paper_v2/mistral", "<s>[INST]", " " + PAPER_INSTRUCTION + "\n ", "</s>[/INST]", "user", True),
    StudyPrompt("paper_v2/qwen", "<|system|>\n", " " + PAPER_INSTRUCTION + "</s> \n<|user|>\n",
                "</s>\n<|assistant|>\n", "system", True),
    # The script writes this template's line breaks as "\\n": the model got a backslash and an "n", not a newline.
    StudyPrompt("paper_v2/qwen2.5", "<|im_start|>system\\n",
                " " + PAPER_INSTRUCTION + "<|im_end|>\\n<|im_start|>user\\n",
                "<|im_end|>\\n<|im_start|>assistant\\n", "system", True),
)}

# v2: the model's name (the last part of its hub id, any case) -> the script's family key (lines 169-178).
_QWEN25 = ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")
STUDY_V2_FAMILIES = {
    "flan-t5-xxl": "flan-t5",
    "meta-llama-3-8b-instruct": "llama3", "meta-llama-3-70b-instruct": "llama3",
    "opt-iml-max-1.3b": "opt",
    "mistral-7b-instruct-v0.2": "mistral", "mistral-7b-instruct-v0.1": "mistral",
    "qwen1.5-7b-chat": "qwen",
    **{f"qwen2.5-{size}-instruct": "qwen2.5" for size in _QWEN25},
}
# The models whose results come from the first generation (the paper's FLAN-T5-XXL, Llama-2-7b-chat and
# OPT-IML-Max 1.3B; Llama-2 is commented out of v2's table, and vLLM did not run T5), and OPT-IML-Max 30B.
STUDY_V1_MODELS = ("flan-t5-xxl", "llama-2-7b-chat", "llama-2-7b-chat-hf", "opt-iml-max-1.3b", "opt-iml-max-30b")


def model_key(path: str) -> str:
    """The name the study's tables are matched on: the last part of a hub id or folder, lower case."""
    return str(path).rstrip("/").rsplit("/", 1)[-1].lower()


def resolve_format(fmt: str, path: str) -> str:
    """scoring.format with `paper` resolved for a model: paper_v1 for the models of the study's first
    generation, paper_v2 for the families its second generation has a template for (Llama-3, Mistral,
    Qwen1.5, Qwen2.5), paper_adapted (the study's instruction and question through this model's own chat
    template or plain text) for any other model. Other formats are returned as they are."""
    if fmt != "paper":
        return fmt
    key = model_key(path)
    if key in STUDY_V1_MODELS:
        return "paper_v1"
    if f"paper_v2/{STUDY_V2_FAMILIES.get(key)}" in STUDY_PROMPTS:
        return "paper_v2"
    return "paper_adapted"


def study_prompt(fmt: str, path: str, arch: str) -> Optional[StudyPrompt]:
    """The study's template for this format and model, or None (formats that are not the study's own).
    paper_v1: FLAN's for encoder-decoders (the script: "t5" in the model's name), Alpaca's otherwise.
    paper_v2: the template of the model's family, the script's 'default' (Alpaca's) when it has none."""
    fmt = resolve_format(fmt, path)
    if fmt == "paper_v1":
        return STUDY_PROMPTS["paper_v1/flan" if arch == "seq2seq" else "paper_v1/alpaca"]
    if fmt == "paper_v2":
        family = STUDY_V2_FAMILIES.get(model_key(path))
        return STUDY_PROMPTS.get(f"paper_v2/{family}", STUDY_PROMPTS["paper_v2/default"])
    return None


def messages(persona: Optional[str], body: str, placement: str, control_system: str = "none") -> list[dict]:
    """Role/content messages for a chat template. The control (persona None) has no system turn
    unless control_system='empty' asks for an empty one (to stop a template's default system prompt)."""
    if placement == "system":
        if persona is not None:
            return [{"role": "system", "content": persona}, {"role": "user", "content": body}]
        if control_system == "empty":
            return [{"role": "system", "content": ""}, {"role": "user", "content": body}]
        return [{"role": "user", "content": body}]
    if placement == "user":
        return [{"role": "user", "content": f"{persona}\n{body}" if persona else body}]
    raise ValueError(f"placement {placement!r} has no messages")


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render_chat(tokenizer, msgs: list[dict]) -> str:
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def system_turn_support(tokenizer) -> str:
    """'accepts', 'rejects' (the template raises) or 'drops' (renders without the system text)."""
    try:
        text = _render_chat(tokenizer, [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "Hi"}])
    except Exception:  # noqa: BLE001 - jinja raise_exception surfaces as various error types
        return "rejects"
    return "accepts" if _SENTINEL in text else "drops"


def resolve_placement(tokenizer, requested: str) -> str:
    """The placement this tokenizer gets; fails early when the request cannot be honoured."""
    chat = has_chat_template(tokenizer)
    if requested == "plain":
        return "plain"
    if not chat:
        if requested == "auto":
            return "plain"
        raise ConfigError(f"model.placement={requested}: the tokenizer has no chat template; use placement=plain or auto")
    support = system_turn_support(tokenizer)
    if requested == "auto":
        return "system" if support == "accepts" else "user"
    if requested == "system" and support != "accepts":
        raise ConfigError(
            f"model.placement=system: this chat template {support} a system turn, which would lose the persona; "
            "use placement=user (persona merged into the user turn) or auto"
        )
    return requested


def render(tokenizer, persona: Optional[str], body: str, placement: str, control_system: str = "none") -> tuple[str, bool]:
    """(the exact text given to the tokenizer, whether the tokenizer should add its special tokens).

    Chat-rendered text carries its own special tokens (BOS and turn markers), so it is
    tokenized without adding more; plain text gets the tokenizer's usual BOS/EOS.
    """
    if placement == "plain":
        return (f"{persona}\n{body}" if persona else body), True
    return _render_chat(tokenizer, messages(persona, body, placement, control_system)), False


def adds_default_system(tokenizer) -> bool:
    """Whether the chat template writes a system prompt of its own when the messages have none (Qwen2.5's
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."): then the rendering without a
    system turn is longer than the rendering with an empty one. False without a chat template, and for
    templates that reject a system turn."""
    if not has_chat_template(tokenizer):
        return False
    try:
        bare = _render_chat(tokenizer, [{"role": "user", "content": "Hi"}])
        empty = _render_chat(tokenizer, [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}])
    except Exception:  # noqa: BLE001 - jinja raise_exception surfaces as various error types
        return False
    return len(bare) > len(empty)


def bound_placement(tokenizer, model, fmt: str) -> str:
    """The persona placement a job records and renders with (`model` a ModelConfig: path, arch, placement,
    control_system). The study's own prompts (study_prompt) place the persona themselves: their placement
    (plain when this tokenizer has no chat template to render other prompts with, e.g. the self-pick
    question). Otherwise resolve_placement, with a warning when the control is not persona-free: the
    template adds a default system prompt and model.control_system=none lets it."""
    study = study_prompt(fmt, model.path, model.arch)
    if study is not None:
        return study.placement if study.placement == "plain" or has_chat_template(tokenizer) else "plain"
    placement = resolve_placement(tokenizer, model.placement)
    if placement == "system" and model.control_system == "none" and adds_default_system(tokenizer):
        log.warning("the chat template of %s adds a system prompt of its own when there is none: the control "
                    "gets it, so it is not persona-free; model.control_system=empty sends an empty system turn",
                    model.path)
    return placement


@dataclass(frozen=True)
class Prompter:
    """How a job's prompts are made: the question's body in the job's format, then the persona placed by
    the study's own template (paper_v1, paper_v2) or by the placement policy (chat template, plain text)."""
    fmt: str  # scoring.format with `paper` resolved (resolve_format)
    placement: str  # bound_placement
    arch: str
    subject_header: bool = True
    control_system: str = "none"
    study: Optional[StudyPrompt] = None

    @property
    def name(self) -> str:
        """The prompt's layout: paper_v1/flan, paper_v2/llama3, ... or the format (mmlu, paper_adapted, cloze)."""
        return self.study.name if self.study is not None else self.fmt

    def body(self, q: Question) -> Body:
        return question_body(q, self.fmt, self.subject_header, paper_cue(self.placement, self.arch))

    def render(self, tokenizer, persona: Optional[str], body: Body) -> tuple[str, bool]:
        """(the exact text given to the tokenizer, whether the tokenizer adds its special tokens): see render."""
        if self.study is not None:
            return self.study.render(persona, body.text), self.study.add_special
        return render(tokenizer, persona, body.text, self.placement, self.control_system)


def make_prompter(fmt: str, model, placement: str, subject_header: bool = True) -> Prompter:
    """The Prompter of a job: `fmt` its scoring.format (auto resolved), `model` its ModelConfig, `placement`
    from bound_placement."""
    concrete = resolve_format(fmt, model.path)
    return Prompter(concrete, placement, model.arch, subject_header, model.control_system,
                    study_prompt(concrete, model.path, model.arch))


def continuation(prompt: str, text: str) -> str:
    """An option or answer label as the model would emit it right after the prompt:
    with a leading space after 'Answer:', without one after a newline or a chat header."""
    text = text.strip()
    return text if prompt[-1:].isspace() else " " + text
