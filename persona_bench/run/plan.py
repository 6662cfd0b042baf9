"""Dry-run plans: what a job would do and cost, without loading weights.

Token counts are estimated from characters (about 4 per token for English text
under the usual subword tokenizers), weight memory from the model config's
parameter count, and time from this device's measured matmul rate at 50%
utilisation, plus a reference line for one H100.

Power (analysis/power.py): the minimum detectable effect (MDE; 80% power, alpha 0.05 two-sided, Bonferroni over
the family: the personas, or the attribute terms) per persona and per attribute term at the planned size. The
paired design's discordance rate (how often persona and control disagree about a question) comes from a
finished run in this job's folder, else from one of the same model beside it, else from any run beside it,
else power.DEFAULT_DISCORDANCE (measured on the demo); the plan says which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from persona_bench.analysis import power
from persona_bench.inputs.prompts import question_body, resolve_format, study_prompt
from persona_bench.models import hub
from persona_bench.models.cost import bytes_per_param, matmul_tflops
from persona_bench.models.devices import resolve_device, resolve_dtype
from persona_bench.run.job import Job

CHARS_PER_TOKEN = 4.0
UTILISATION = 0.5
H100_BF16_TFLOPS = 700.0  # dense bf16 rate one H100 SXM sustains on large matmuls
UNDECIDED = "decided when the tokenizer loads (see the run's log)"  # placement, where the plan reads no tokenizer file


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
    params_b: float = 0.0  # parameters (billions) the estimates use: the preset's, or counted from config.json (model=hf)
    chat_template: str = UNDECIDED  # where the persona goes (models.hub.chat_template)
    discordance: float = power.DEFAULT_DISCORDANCE  # share of questions on which a persona and the control disagree
    discordance_source: str = "default"  # the predictions file it was measured on, or "default"
    mde_persona: float = float("inf")  # smallest persona-vs-control difference detected with 80% power
    mde_tests: int = 0  # personas compared with the control (the persona family's size)
    mde_attributes: list = field(default_factory=list)  # {term, n_roles, mde} per attribute term (roles random)

    def as_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        return (
            f"[plan] {self.model} ({self.path}): {self.questions:,} questions in {self.subjects} subjects x "
            f"{self.personas} personas ({self.roles} roles; templates {', '.join(self.templates)}) = "
            f"{self.prompts:,} prompts, ~{self.est_tokens / 1e6:,.1f}M tokens; weights ~{self.weight_gib:,.1f} GiB "
            f"({self.size()}, {self.dtype}, quantization {self.quantization}); on {self.device} "
            f"({self.matmul_tflops:,.2f} TFLOP/s measured) ~{self.est_hours:,.1f} h, on one H100 ~{self.est_hours_h100:,.2f} h"
            + f"\n  persona placement: {self.chat_template}"
            + self.render_power()
        )

    def size(self) -> str:
        if not self.params_b:
            return "size unknown: set model.params_b and model.non_embedding_params_b (billions)"
        return f"{self.params_b * 1000:,.0f}M parameters" if self.params_b < 1 else f"{self.params_b:,.2f}B parameters"

    def render_power(self) -> str:
        """The power lines of the plan (below its first line)."""
        def pts(x):
            return power.mde_words(x, missing="aliased")

        src = "default, the demo's" if self.discordance_source == "default" else self.discordance_source
        terms = ", ".join(f"{a['term']} {pts(a['mde'])}" for a in self.mde_attributes)
        return (f"\n  power: minimum detectable effect (80% power, alpha 0.05 two-sided, Bonferroni over the family), "
                f"in accuracy points; discordance {self.discordance:.3f} ({src})"
                f"\n  per persona (exact McNemar, {self.mde_tests} tests): {pts(self.mde_persona)}"
                f"\n  per attribute (roles random, role sd {power.DEFAULT_ROLE_SD}; "
                f"{sum(a['mde'] is not None for a in self.mde_attributes)} estimable terms): {terms or 'none'}")



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
        params_b=m.params_b,
        chat_template=placement_words(m),
        **power_plan(job),
    )


def placement_words(m) -> str:
    """Where the persona will go, from the chat template in the model's tokenizer files, where this process has
    read its config.json (model=hf, a local directory): no request is made for a preset's model."""
    if m.source == "pypi_gguf" or m.gguf_file or not hub.was_read(m.path, m.revision):
        return UNDECIDED
    if m.placement != "auto":
        return f"{m.placement} (model.placement)"
    return hub.chat_template(m.path, m.revision)


def prior_runs(job: Job) -> list[Path]:
    """Folders whose finished predictions may give the discordance rate: this job's own, then the same model's
    beside it, then any run beside it (newest first)."""
    out = job.out
    beside = sorted((p for p in out.parent.glob("*") if p.is_dir() and p != out),
                    key=lambda p: p.stat().st_mtime, reverse=True) if out.parent.is_dir() else []
    same = [p for p in beside if p.name.startswith(f"{job.cfg.model.name}-")]
    return [out] + same + [p for p in beside if p not in same]


def power_plan(job: Job) -> dict:
    """discordance, its source, and the MDEs per persona and per attribute term at the job's planned size."""
    rate, source = power.prior_discordance(prior_runs(job))
    rate = rate if rate is not None else power.DEFAULT_DISCORDANCE
    n = getattr(job.questions, "n_total", len(job.questions))
    rows = [{"template": t.name, "role": r.name, "role_category": r.category, "gender": r.gender,
             "interpersonal": "interpersonal" if r.interpersonal else "non-interpersonal",
             "domain_role": "domain role" if r.domain else "no domain"} for t, r in job.grid if r is not None]
    if not rows:
        return {"discordance": rate, "discordance_source": source or "default"}
    scale = n / max(len(job.questions), 1)  # a shard's questions stand for the whole job's
    in_domain = pd.Series({r.name: scale * sum(q.subject in r.subjects for q in job.questions)
                           for r in job.roles if r.domain and r.subjects}, dtype=float)
    att = power.attribute_mde(pd.DataFrame(rows), n, rate, in_domain=in_domain[in_domain > 0])
    return {"discordance": round(rate, 4), "discordance_source": source or "default",
            "mde_persona": power.persona_mde(n, rate, n_tests=len(rows)), "mde_tests": len(rows),
            "mde_attributes": [{"term": a.term, "n_roles": int(a.n_roles), "mde": None if a.mde != a.mde else
                                round(float(a.mde), 4)} for a in att.itertuples()]}
