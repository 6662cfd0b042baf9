"""Prompts as messages, and where the persona goes.

A prompt is a persona (possibly none: the control) plus a question body. How the
persona reaches the model is the placement policy, recorded on every result row:

  system  the chat template's system turn (chat models that accept one)
  user    merged into the user turn, persona first (chat templates that reject a
          system turn, or silently drop it): the persona is never dropped
  plain   plain text, persona line then question (base models, FLAN-T5)

`auto` picks `system` when the tokenizer's chat template renders a system turn,
`user` when it has a chat template that rejects or drops one, `plain` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from persona_bench.config.errors import ConfigError
from persona_bench.inputs.questions import LETTERS, Question

_SENTINEL = "PERSONA-SENTINEL-7f3a"
MMLU_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
# The study's (arXiv 2311.10054) instruction, and FLAN's closing line, for scoring.format=paper.
PAPER_INSTRUCTION = "The following is a multiple choice question (with answers). Reply with only the option number."
FLAN_CUE = "Please select the correct answer number:"


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


def question_body(q: Question, fmt: str, subject_header: bool = True, cue: str = "\nAnswer:") -> Body:
    """The question in one of the formats: mmlu (A-D), paper (1-4; the study's instruction, then the
    question with its numbered options inline, then `cue`: see paper_cue), cloze (no options listed)."""
    n = len(q.choices)
    if fmt == "mmlu":
        head = MMLU_HEADER.format(subject=q.subject.replace("_", " ")) if subject_header else ""
        lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(q.choices)]
        return Body(head + q.question.strip() + "\n" + "\n".join(lines) + "\nAnswer:", tuple(LETTERS[:n]), tuple(q.choices))
    if fmt == "paper":  # the study's own layout: numbered options inline (its full_question column)
        opts = ", ".join(f"{i + 1}. {c}" for i, c in enumerate(q.choices))
        text = f"{PAPER_INSTRUCTION}\n\n{q.question.strip()} Options: {opts}.{cue}"
        return Body(text, tuple(str(i + 1) for i in range(n)), tuple(q.choices))
    if fmt == "cloze":  # lm-evaluation-harness's mmlu_continuation
        return Body(f"Question: {q.question.strip()}\nAnswer:", (), tuple(q.choices))
    raise ConfigError(f"scoring.format={fmt!r}; valid: mmlu, paper, cloze")


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


def continuation(prompt: str, text: str) -> str:
    """An option or answer label as the model would emit it right after the prompt:
    with a leading space after 'Answer:', without one after a newline or a chat header."""
    text = text.strip()
    return text if prompt[-1:].isspace() else " " + text
