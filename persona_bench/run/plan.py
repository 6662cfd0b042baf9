"""Dry-run plans: what a job would do and cost, without loading weights.

Token counts are estimated from characters (about 4 per token for English text
under the usual subword tokenizers), weight memory from the model config's
parameter count, and time from this device's measured matmul rate at 50%
utilisation, plus a reference line for one H100.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from persona_bench.inputs.prompts import question_body, resolve_format, study_prompt
from persona_bench.models.cost import bytes_per_param, matmul_tflops
from persona_bench.models.devices import resolve_device, resolve_dtype
from persona_bench.run.job import Job

CHARS_PER_TOKEN = 4.0
UTILISATION = 0.5
H100_BF16_TFLOPS = 700.0  # dense bf16 rate one H100 SXM sustains on large matmuls


@dataclass
class Plan:
    model: str
    path: str
    questions: int
    subjects: int
    roles: int
    templates: list
    personas: int
    prompts: int
    est_tokens: int
    weight_gib: float
    device: str
    dtype: str
    quantization: str
    matmul_tflops: float
    est_hours: float
    est_hours_h100: float

    def as_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        return (
            f"[plan] {self.model} ({self.path}): {self.questions:,} questions in {self.subjects} subjects x "
            f"{self.personas} personas ({self.roles} roles; templates {', '.join(self.templates)}) = "
            f"{self.prompts:,} prompts, ~{self.est_tokens / 1e6:,.1f}M tokens; weights ~{self.weight_gib:,.1f} GiB "
            f"({self.dtype}, quantization {self.quantization}); on {self.device} "
            f"({self.matmul_tflops:,.2f} TFLOP/s measured) ~{self.est_hours:,.1f} h, on one H100 ~{self.est_hours_h100:,.2f} h"
        )


def make_plan(job: Job) -> Plan:
    """The plan of a prepared job (no weights): its prompts, tokens, weight memory and time."""
    cfg, questions, roles, templates, grid, method, fmt = (job.cfg, job.questions, job.roles, job.templates, job.grid,
                                                           job.method, job.fmt)
    m = cfg.model
    dev = resolve_device(cfg.device)
    dtype = resolve_dtype(m.dtype, dev, m.arch)
    study = study_prompt(fmt, m.path, m.arch)  # the study's own template around each question, if any
    wrapper_chars = len(study.head + study.mid + study.tail) if study is not None else 0
    body_chars = 0
    for q in questions:
        # the body with the plain-text cue (a chat template's is within a few characters of it)
        b = question_body(q, resolve_format(fmt, m.path), cfg.scoring.subject_header)
        body_chars += len(b.text) + wrapper_chars + (sum(len(o) + 1 for o in b.options) if method == "cloze" else 0)
    persona_chars = sum(len(t.render(r)) + 1 if r is not None else 0 for t, r in grid)
    chars = body_chars * len(grid) + persona_chars * len(questions)
    tokens = int(chars / CHARS_PER_TOKEN)
    if method == "generate":  # every prompt's new tokens, at most max_new_tokens each
        tokens += len(questions) * len(grid) * cfg.scoring.generate.max_new_tokens
    params = m.params_b * 1e9
    flops = 2 * (m.non_embedding_params_b or m.params_b) * 1e9 * tokens
    tflops = matmul_tflops(dtype if dtype in ("bf16", "fp32", "fp16") else "fp32", str(dev), n=1024, seconds=0.3)
    return Plan(
        model=m.name,
        path=m.path,
        questions=len(questions),
        subjects=len({q.subject for q in questions}),
        roles=len(roles),
        templates=[t.name for t in templates],
        personas=len(grid),
        prompts=len(grid) * len(questions),
        est_tokens=tokens,
        weight_gib=round(params * bytes_per_param(dtype, m.quantization) / 2**30, 2),
        device=str(dev),
        dtype=dtype,
        quantization=m.quantization,
        matmul_tflops=round(tflops, 3),
        est_hours=round(flops / (tflops * 1e12 * UTILISATION) / 3600, 2),
        est_hours_h100=round(flops / (H100_BF16_TFLOPS * 1e12 * UTILISATION) / 3600, 3),
    )
