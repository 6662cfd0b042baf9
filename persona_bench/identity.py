"""Question identities: subject + a content hash of question and options.

The project never ships question text. A question is named by its subject and a
hash of its normalised text and options, so the paper's sample (and any user
sample) can be shipped as identities and resolved against MMLU at run time.

Normalisation: unicode NFC, whitespace collapsed and stripped, and trailing
periods removed from every option (about a third of the paper's sample lacks the
trailing "." that MMLU has on the same option).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Sequence

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
