"""The run: role x template x question grid -> length-sorted batches -> result rows.

    validate config -> roles, templates, questions -> (dry run: plan and stop)
    -> load model -> placement -> prompts and requests -> batches under the token
    budget, longest first -> scores -> rows in grid order -> predictions.parquet,
    summary.json

Everything a row needs to be understood on its own (prompt text, placement,
scoring, role attributes) is on the row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from . import __version__
from .config import Config, ConfigError, resolved_scoring, validate
from .data import Question, data_hash, default_cache_dir, load_questions
from .models import load_model, resolve_device
from .plan import make_plan
from .prompts import continuation, question_body, render, resolve_placement
from .roles import Role, Template, build_roles, build_templates, personas
from .scoring import LabelResolver, Request, Result, score_batch, suffix_ids
from .summary import accuracy_summary
from .throughput import matmul_tflops, utilisation

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "gguf", "hydra-core", "omegaconf", "pandas",
            "numpy", "pyarrow", "bitsandbytes", "datasets")


@dataclass
class Item:
    """One prompt of the grid."""
    question: Question
    template: Template
    role: Optional[Role]
    prompt: str
    request: Request
    choices: list[str]  # label strings (letter) or continuation strings (cloze), as fed after the prompt


def package_versions() -> dict:
    out = {"python": platform.python_version(), "persona_bench": __version__}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def build_items(questions, grid, tokenizer, cfg: Config, placement: str, method: str, fmt: str) -> list[Item]:
    """Render and tokenize every prompt of the grid (grid order: persona-major, question-minor)."""
    arch = cfg.model.arch
    labels = LabelResolver(tokenizer, arch)
    bodies = [question_body(q, fmt, cfg.scoring.subject_header) for q in questions]
    texts, specials, meta = [], [], []
    for template, role in grid:
        persona = template.render(role) if role is not None else None
        for q, body in zip(questions, bodies):
            text, add_special = render(tokenizer, persona, body.text, placement, cfg.model.control_system)
            texts.append(text)
            specials.append(add_special)
            meta.append((q, template, role, body))
    # One batched tokenizer call per special-token mode (fast tokenizers parallelise it).
    ids: list = [None] * len(texts)
    for mode in (True, False):
        idx = [i for i, s in enumerate(specials) if s is mode]
        if idx:
            enc = tokenizer([texts[i] for i in idx], add_special_tokens=mode)["input_ids"]
            for i, e in zip(idx, enc):
                ids[i] = e
    items = []
    for text, add_special, prompt_ids, (q, template, role, body) in zip(texts, specials, ids, meta):
        if method == "letter":
            req = Request(prompt_ids, label_ids=labels(text, prompt_ids, body.labels, add_special))
            choices = [continuation(text, lab) for lab in body.labels] if arch != "seq2seq" else list(body.labels)
        else:
            choices = [continuation(text, o) for o in body.options]
            if arch == "seq2seq":
                opt_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
            else:
                opt_ids = [suffix_ids(tokenizer, text, prompt_ids, c, add_special) for c in choices]
            req = Request(prompt_ids, option_ids=opt_ids)
        items.append(Item(q, template, role, text, req, choices))
    return items


def make_batches(items: list[Item], budget: int) -> list[list[int]]:
    """Indices of items in batches, longest first, each within `budget` padded tokens
    (prompt width plus option rows, times rows). An over-long single item gets its own batch."""
    def cost(r: Request) -> int:
        n_opt = len(r.option_ids)
        return len(r.prompt_ids) + n_opt * max((len(o) for o in r.option_ids), default=0)

    order = sorted(range(len(items)), key=lambda i: (-cost(items[i].request), i))
    batches, i = [], 0
    while i < len(order):
        rows = max(1, budget // max(1, cost(items[order[i]].request)))
        batches.append(order[i : i + rows])
        i += rows
    return batches


def score_items(model, items: list[Item], cfg: Config, method: str, pad_id: int) -> tuple[list[Result], dict]:
    """Score all items in length-sorted batches; results in item order, and timing figures."""
    from tqdm import tqdm

    batches = make_batches(items, cfg.model.batch_tokens)
    results: list[Optional[Result]] = [None] * len(items)
    n_tokens = 0
    t0 = time.perf_counter()
    with tqdm(total=len(items), unit="prompt", disable=not cfg.progress, desc=cfg.model.name, smoothing=0.1) as bar:
        for batch in batches:
            reqs = [items[i].request for i in batch]
            for i, res in zip(batch, score_batch(model, reqs, cfg.model.arch, method, pad_id, cfg.scoring.cloze_score, cfg.model.batch_tokens)):
                results[i] = res
            n_tokens += sum(r.cost for r in reqs)
            bar.update(len(batch))
    seconds = time.perf_counter() - t0
    timing = {
        "seconds": round(seconds, 2),
        "batches": len(batches),
        "tokens": n_tokens,
        "prompts_per_s": round(len(items) / seconds, 2) if seconds else None,
        "tokens_per_s": round(n_tokens / seconds, 1) if seconds else None,
    }
    return results, timing  # type: ignore[return-value]


def rows(items: list[Item], results: list[Result], cfg: Config, placement: str, method: str, fmt: str) -> pd.DataFrame:
    recs = []
    for it, res in zip(items, results):
        q, role = it.question, it.role
        recs.append({
            "model": cfg.model.name,
            "question_id": q.id,
            "subject": q.subject,
            "template": it.template.name,
            "role": role.name if role else None,
            "role_category": role.category if role else None,
            "gender": role.gender if role else None,
            "domain": role.domain if role else None,
            "interpersonal": role.interpersonal if role else None,
            "in_domain": (q.subject in role.subjects) if role else None,
            "placement": placement,
            "scoring": method,
            "format": fmt,
            "prompt": it.prompt,
            "prompt_hash": sha(it.prompt),
            "n_prompt_tokens": len(it.request.prompt_ids),
            "choices": it.choices,
            "n_choices": len(it.choices),
            "scores": res.scores,
            "label_probs": res.probs,
            "label_mass": res.label_mass,
            "option_logprob_sum": res.logprob_sum,
            "option_n_tokens": res.n_tokens,
            "pred": res.pred,
            "answer": q.answer,
            "correct": res.pred == q.answer,
            "split": q.meta.get("split"),
        })
    return pd.DataFrame.from_records(recs)


def write_atomic(path: Path, write) -> None:
    """Write to a temporary name, then rename: a reader never sees a partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def prepare(cfg: Config):
    """Everything that can fail without weights: values, roles, templates, questions, the grid."""
    validate(cfg)
    roles = build_roles(cfg.role_set)
    templates = build_templates(cfg.template)
    grid = personas(roles, templates)
    questions = load_questions(cfg.dataset, cfg.cache_dir)
    return roles, templates, grid, questions


def run(cfg: Config) -> dict:
    """Run one job; return its summary (the headline metric is summary['accuracy']['persona_mean'])."""
    method, fmt = resolved_scoring(cfg)
    roles, templates, grid, questions = prepare(cfg)
    out = Path(cfg.output_dir)
    if cfg.dry_run:
        plan = make_plan(cfg, questions, roles, templates, grid, method, fmt)
        print(plan.render())
        return {"dry_run": plan.as_dict()}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output_dir={out} cannot be created: {e}") from None
    if not os.access(out, os.W_OK):
        raise ConfigError(f"output_dir={out} is not writable")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, tokenizer, info = load_model(cfg.model, cfg.device, default_cache_dir(cfg.cache_dir))
    placement = resolve_placement(tokenizer, cfg.model.placement)
    items = build_items(questions, grid, tokenizer, cfg, placement, method, fmt)
    log.info("%d prompts: %d questions x %d personas (%d roles, templates %s + control); placement=%s, scoring=%s/%s",
             len(items), len(questions), len(grid), len(roles), [t.name for t in templates[1:]], placement, method, fmt)
    pad_id = next(x for x in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if x is not None)
    results, timing = score_items(model, items, cfg, method, pad_id)
    df = rows(items, results, cfg, placement, method, fmt)
    write_atomic(out / "predictions.parquet", lambda p: df.to_parquet(p, index=False))
    dev = resolve_device(cfg.device)
    tflops = matmul_tflops(info["dtype"] if info["dtype"] in ("bf16", "fp32", "fp16") else "fp32", str(dev))
    timing["matmul_tflops"] = round(tflops, 3)
    timing["utilisation"] = round(utilisation(timing["tokens_per_s"] or 0, info["n_non_embedding_params"], tflops), 3)
    summary = {
        "model": info,
        "experiment": cfg.experiment_name,
        "role_set": cfg.role_set.name,
        "templates": {t.name: t.text for t in templates},
        "dataset": {"name": cfg.dataset.name, "source": cfg.dataset.source, "sample": cfg.dataset.sample,
                    "n_questions": len(questions), "data_hash": data_hash(questions)},
        "placement": placement,
        "control_system": cfg.model.control_system,
        "scoring": {"method": method, "format": fmt, "cloze_score": cfg.scoring.cloze_score},
        **accuracy_summary(df, cfg.scoring.collapse_warning),
        "throughput": timing,
        "packages": package_versions(),
    }
    write_atomic(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2, default=str)))
    log.info("control accuracy %.4f, persona mean %.4f, by template %s; predicted labels %s; %.1f prompts/s, %.0f tokens/s "
             "(%.0f%% of the %.2f TFLOP/s matmul rate); results in %s",
             summary["accuracy"]["control"], summary["accuracy"]["persona_mean"], summary["accuracy"]["template"],
             summary["pred_histogram"], timing["prompts_per_s"], timing["tokens_per_s"], 100 * timing["utilisation"],
             tflops, out)
    return summary
