"""Multiple-choice questions and their identities: subject + a content hash of question and options.

The project never ships question text. A question is named by its subject and a
hash of its normalised text and options, so the paper's sample (and any user
sample) can be shipped as identities and resolved against MMLU at run time.

Normalisation: unicode NFC, whitespace collapsed and stripped, and trailing
periods removed from every option (about a third of the paper's sample lacks the
trailing "." that MMLU has on the same option).

A question that appears more than once in a job's list (the paper's sample repeats
27 questions within a subject; MMLU repeats some) keeps one identity per occurrence
when the job keeps repeats (dataset.dedupe=false): the k-th occurrence is
"<subject>/<hash>#k" (number_repeats), so every row of the prompt grid stays its own
prompt in the results and the analysis.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

LETTERS = "ABCDEFGHIJ"


@dataclass
class Question:
    id: str  # "<subject>/<content hash>"
    subject: str
    question: str
    choices: list[str]
    answer: int  # 0-based index into choices
    meta: dict = field(default_factory=dict)  # e.g. the paper's split and question id


_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFC, collapse whitespace, strip."""
    return _WS.sub(" ", unicodedata.normalize("NFC", str(text))).strip()


def normalise_option(text: str) -> str:
    """As normalise_text, and without trailing periods."""
    return normalise_text(text).rstrip(".").rstrip()


def content_hash(question: str, options: Sequence[str]) -> str:
    """16 hex digits of sha256 over the normalised question and options, in order."""
    payload = json.dumps(
        [normalise_text(question), [normalise_option(o) for o in options]],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def question_id(subject: str, question: str, options: Sequence[str]) -> str:
    """The identity used everywhere: '<subject>/<content hash>'."""
    return f"{subject}/{content_hash(question, options)}"


def make_question(subject: str, question: str, choices: list[str], answer: int, **meta) -> Question:
    subject = str(subject).strip().replace(" ", "_")
    choices = [str(c) for c in choices]
    return Question(f"{subject}/{content_hash(question, choices)}", subject, str(question), choices, int(answer), meta)


REPEAT = "#"  # "<subject>/<hash>#k": the k-th occurrence (k >= 2) of a question in a job's list


def base_id(qid: str) -> str:
    """A question's identity without its occurrence number: '<subject>/<hash>'."""
    return qid.split(REPEAT, 1)[0]


def number_repeats(questions: Iterable[Question]) -> list[Question]:
    """The questions with the k-th occurrence (k >= 2) of an identity renamed '<id>#k' (meta occurrence=k),
    in list order; first occurrences keep their identity. Questions in two subjects already differ by
    subject."""
    seen: dict[str, int] = {}
    out = []
    for q in questions:
        k = seen[q.id] = seen.get(q.id, 0) + 1
        out.append(q if k == 1 else Question(f"{q.id}{REPEAT}{k}", q.subject, q.question, q.choices, q.answer,
                                             {**q.meta, "occurrence": k}))
    return out


def dedupe(questions: Iterable[Question]) -> list[Question]:
    """Keep the first of questions with the same text and options, in any subject."""
    seen, out = set(), []
    for q in questions:
        h = base_id(q.id).split("/", 1)[1]
        if h not in seen:
            seen.add(h)
            out.append(q)
    return out


def subsample(questions: list[Question], per_subject: Optional[int], limit: Optional[int], seed: int) -> list[Question]:
    """Seeded selection that keeps the input order; the same inputs give the same questions."""
    keep = list(range(len(questions)))
    if per_subject is not None:
        by_subject: dict[str, list[int]] = {}
        for i in keep:
            by_subject.setdefault(questions[i].subject, []).append(i)
        keep = []
        for subject in sorted(by_subject):
            idx = by_subject[subject]
            keep += idx if len(idx) <= per_subject else random.Random(f"{seed}/{subject}").sample(idx, per_subject)
        keep.sort()
    if limit is not None and len(keep) > limit:
        keep = sorted(random.Random(seed).sample(keep, limit))
    return [questions[i] for i in keep]


def data_hash(questions: list[Question]) -> str:
    """sha256 over the ordered identities and answers: two runs on the same questions share it."""
    h = hashlib.sha256()
    for q in questions:
        h.update(f"{q.id}\t{q.answer}\n".encode())
    return h.hexdigest()[:16]
