"""Sharding: one model's prompt grid split by question over many jobs (GPUs, nodes).

    python run.py -m model=llama2 experiment=paper shard.count=4 shard.index=0,1,2,3

The unit is the question: every persona of a question (and the control) is in the same shard, so
each shard's summary and report are paired comparisons on their own, and the union of the shards
is the unsharded grid. The distinct question ids (subject + content hash) are sorted and the k-th
goes to shard k % count: balanced to one question, the same whatever the order the questions load
in, the batch budget, the device or any other runtime setting. A shard keeps its questions in the
order they loaded, so its rows are the unsharded job's rows for those questions, in the same order.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from persona_bench.config.errors import ConfigError


def assign(ids: Iterable[str], count: int) -> dict[str, int]:
    """Each distinct question id -> its shard (0 .. count-1): the ids sorted, the k-th to shard k % count."""
    return {qid: k % count for k, qid in enumerate(sorted(set(ids)))}


class ShardQuestions(list):
    """The questions of one shard, a plain list in loaded order, that also knows its place: `index` of
    `count` shards, and `n_total` questions in the whole grid."""

    def __init__(self, questions: Iterable, index: int, count: int, n_total: int):
        super().__init__(questions)
        self.index, self.count, self.n_total = index, count, n_total


def select(questions: Sequence, index: int, count: int) -> ShardQuestions:
    """The questions of shard `index` of `count` (all of them when count is 1). A shard with no
    question (more shards than distinct questions) is a ConfigError, before any model loads."""
    if count == 1:
        return ShardQuestions(questions, 0, 1, len(questions))
    owner = assign((q.id for q in questions), count)
    if len(owner) < count:
        raise ConfigError(f"shard.count={count} is more than the {len(owner)} questions of this job; "
                          f"use shard.count={len(owner)} or fewer")
    return ShardQuestions([q for q in questions if owner[q.id] == index], index, count, len(questions))
