"""The paper's "the model picks its own persona" (section 6): before answering, the model is shown the
question and the run's role set as a numbered list and asked which role would answer it best. Its
pick, parsed like an answer (scoring/parse.py: the number or the role's name), becomes a persona-selection
strategy in the report (analysis/strategies.py, `model_pick/<template>`): the question is then scored with
the persona the model picked.

    <run>/self_pick.parquet   question_id, subject, prompt, generation, parsed, parse_rule, role

Greedy decoding, so the pick is the same on every run; written at the end of a job while the model
is loaded (report.self_pick=true), whatever the job's scoring method.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from persona_bench.backends.base import Backend
from persona_bench.config.schema import GenerateConfig
from persona_bench.inputs.prompts import paper_cue, render
from persona_bench.outputs import SELF_PICK, write_atomic
from persona_bench.run.batching import make_batches
from persona_bench.run.items import tokenize
from persona_bench.run.job import Job
from persona_bench.scoring.parse import parse_answer
from persona_bench.scoring.requests import Request, Result

log = logging.getLogger(__name__)

INSTRUCTION = ("Which of the following roles would be best at answering the question below? "
               "Reply with only the number of the role.")
MAX_NEW_TOKENS = 16  # a number or a role's name (greedy decoding)


def pick_body(question: str, role_names: list[str], cue: str) -> str:
    roles = ", ".join(f"{i + 1}. {name}" for i, name in enumerate(role_names))
    return f"{INSTRUCTION}\n\nQuestion: {question.strip()}\n\nRoles: {roles}.{cue}"


def pick_requests(job: Job, backend: Backend) -> tuple[list[str], list[Request], tuple[str, ...], list[str]]:
    """The self-pick's prompts (one per question of the job): texts, requests, the labels ("1".."n") and
    the role names, as the parser reads them."""
    role_names = [r.name for r in job.roles]
    cue = paper_cue(job.placement, job.cfg.model.arch)
    labels = tuple(str(i + 1) for i in range(len(role_names)))
    texts, specials = [], []
    for q in job.questions:
        text, special = render(backend.tokenizer, None, pick_body(q.question, role_names, cue), job.placement,
                               job.cfg.model.control_system)
        texts.append(text)
        specials.append(special)
    requests = [Request(ids, answer_labels=labels, answer_options=tuple(role_names))
                for ids in tokenize(backend.tokenizer, texts, specials)]
    return texts, requests, labels, role_names


def self_pick(job: Job, backend: Backend) -> pd.DataFrame:
    """Ask the model, once per question of the job, which of its roles it would answer as (greedy, at most
    MAX_NEW_TOKENS new tokens); one row per question (outputs.SELF_PICK_COLUMNS)."""
    texts, requests, labels, role_names = pick_requests(job, backend)
    greedy = GenerateConfig(max_new_tokens=MAX_NEW_TOKENS)
    results: dict[int, Result] = {}
    for batch in make_batches(requests, backend.batch_budget("generate"), extra=MAX_NEW_TOKENS):
        results.update(zip(batch, backend.generate([requests[i] for i in batch], greedy)))
    recs = []
    for i, (q, prompt) in enumerate(zip(job.questions, texts)):
        text = results[i].generation or ""
        p = parse_answer(text, labels, tuple(role_names))
        recs.append({"question_id": q.id, "subject": q.subject, "prompt": prompt,
                     "generation": text, "parsed": p.parsed, "parse_rule": p.rule,
                     "role": role_names[p.index] if p.parsed else None})
    return pd.DataFrame.from_records(recs)


def write_self_pick(out: Path, df: pd.DataFrame) -> Path:
    path = Path(out) / SELF_PICK
    write_atomic(path, lambda p: df.to_parquet(p, index=False))
    n = len(df)
    top = df["role"].value_counts()
    log.info("self-pick: the model named a role for %d of %d questions (%d distinct%s); %s", int(df["parsed"].sum()), n,
             len(top), f", most often {top.index[0]} ({int(top.iloc[0])})" if len(top) else "", path)
    return path
