"""The items of a job: every prompt of its grid (persona x question), rendered, tokenized and turned
into the Request a backend scores, in grid order (persona-major, question-minor).

Everything a result row needs to be understood on its own (prompt text, the labels and options
shown) stays on the item.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from persona_bench.inputs.prompts import continuation, make_prompter
from persona_bench.inputs.questions import Question
from persona_bench.inputs.roles import Role, Template
from persona_bench.scoring.generate import prompt_seed
from persona_bench.scoring.requests import Request, TokenizationError
from persona_bench.scoring.tokens import LabelResolver, suffix_ids_many

if TYPE_CHECKING:
    from persona_bench.run.job import Job

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One prompt of the grid."""
    question: Question
    template: Template
    role: Optional[Role]
    prompt: str
    request: Request
    choices: list[str]  # label strings (letter, generate) or continuation strings (cloze), as fed after the prompt
    labels: tuple[str, ...] = ()  # generate: the labels shown in the prompt, for the parser
    options: tuple[str, ...] = ()  # generate: the options' text, for the parser


def prompt_hash(text: str) -> str:
    """16 hex digits of sha256 over a prompt's exact text: identifies a result in the store and the rows."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tokenize(tokenizer, texts: list[str], specials: list[bool]) -> list[list[int]]:
    """Token ids of every text, with or without the tokenizer's special tokens as `specials` says: one
    batched tokenizer call per mode (fast tokenizers parallelise it)."""
    ids: list = [None] * len(texts)
    for mode in (True, False):
        idx = [i for i, s in enumerate(specials) if s is mode]
        if idx:
            enc = tokenizer([texts[i] for i in idx], add_special_tokens=mode)["input_ids"]
            for i, e in zip(idx, enc):
                ids[i] = e
    return ids


def build_items(job: Job, tokenizer) -> list[Item]:
    """Render and tokenize every prompt of the job's grid (grid order: persona-major, question-minor);
    job.placement must be bound (Job.bind)."""
    cfg, questions, grid, placement, method, fmt = job.cfg, job.questions, job.grid, job.placement, job.method, job.fmt
    arch = cfg.model.arch
    labels = LabelResolver(tokenizer, arch)
    prompter = make_prompter(fmt, cfg.model, placement, cfg.scoring.subject_header)
    if prompter.study is not None:
        log.info("prompts: the study's own template %s (persona placement: %s)", prompter.name, placement)
    bodies = [prompter.body(q) for q in questions]
    texts, specials, meta = [], [], []
    for template, role in grid:
        persona = template.render(role) if role is not None else None
        for q, body in zip(questions, bodies):
            text, add_special = prompter.render(tokenizer, persona, body)
            texts.append(text)
            specials.append(add_special)
            meta.append((q, template, role, body))
    ids = tokenize(tokenizer, texts, specials)
    items = []
    unlabelled = []
    for text, add_special, prompt_ids, (q, template, role, body) in zip(texts, specials, ids, meta):
        if method == "generate":  # the labels' logits at the first generated position come with each answer
            try:
                prefix, label_ids = labels.split(text, prompt_ids, body.labels, add_special)
            except TokenizationError as e:
                prefix, label_ids = [], []
                unlabelled.append(str(e))
            seed = prompt_seed(cfg.scoring.generate.seed, prompt_hash(text))
            req = Request(prompt_ids, label_ids=label_ids, seed=seed, label_prefix=prefix,
                          answer_labels=tuple(body.labels), answer_options=tuple(body.options))
            items.append(Item(q, template, role, text, req, list(body.labels), body.labels, body.options))
            continue
        if method == "letter":
            req = Request(prompt_ids, label_ids=labels(text, prompt_ids, body.labels, add_special))
            choices = [continuation(text, lab) for lab in body.labels] if arch != "seq2seq" else list(body.labels)
        else:
            choices = [continuation(text, o) for o in body.options]
            req = Request(prompt_ids)
        items.append(Item(q, template, role, text, req, choices))
    if unlabelled:
        log.warning("%d prompts have answer labels that are not single tokens (%s): their generated answers are "
                    "parsed, but there is no logit answer on the same prompt to compare with", len(unlabelled), unlabelled[0])
    if method == "cloze":
        # The prompt from the question's body on: the same for every persona of a question.
        ends = [text[text.rfind(body.text):] if body.text in text else text for text, (_, _, _, body) in zip(texts, meta)]
        option_tokens(items, specials, ends, tokenizer, arch)
    return items


def option_tokens(items: list[Item], specials: list[bool], ends: list[str], tokenizer, arch: str) -> None:
    """Each cloze item's option tokens, tokenized once per question rather than once per prompt: the
    personas of a question share the prompt's end (`ends`: the question's body and what follows it),
    and an option's tokens depend only on the text just before it. Each question's tokens are checked
    on a second prompt that ends the same way, and so is every 16th prompt; a mismatch anywhere
    tokenizes every prompt's options in full instead. (The sharing assumes what every subword
    tokenizer we know does: the text before a line break cannot change how the tokens after it
    split; the checks are there for a tokenizer that breaks it.)"""
    if arch == "seq2seq":  # the decoder's tokens do not depend on the prompt
        cache = {}
        for it in items:
            for c in it.choices:
                if c not in cache:
                    cache[c] = tokenizer(c, add_special_tokens=False)["input_ids"]
            it.request.option_ids = [cache[c] for c in it.choices]
        return

    def tokenize(idx: list[int]) -> list[list[list[int]]]:
        pairs = [(i, c) for i in idx for c in items[i].choices]
        flat = suffix_ids_many(tokenizer, [items[i].prompt for i, _ in pairs], [items[i].request.prompt_ids for i, _ in pairs],
                               [c for _, c in pairs], [specials[i] for i, _ in pairs])
        out, k = [], 0
        for i in idx:
            out.append(flat[k : k + len(items[i].choices)])
            k += len(items[i].choices)
        return out

    key = [(end, tuple(it.choices), special) for it, end, special in zip(items, ends, specials)]
    first: dict = {}
    second: dict = {}
    for i, k in enumerate(key):
        if k not in first:
            first[k] = i
        elif k not in second:
            second[k] = i
    shared = dict(zip(first, tokenize(list(first.values()))))
    check = sorted(set(second.values()) | set(range(0, len(items), 16)) - set(first.values()))
    if any(shared[key[i]] != got for i, got in zip(check, tokenize(check))):
        log.warning("option tokens depend on the persona before the question for this tokenizer; tokenizing "
                    "every prompt's options in full")
        for i, o in zip(range(len(items)), tokenize(list(range(len(items))))):
            items[i].request.option_ids = o
        return
    for it, k in zip(items, key):
        it.request.option_ids = [list(o) for o in shared[k]]
