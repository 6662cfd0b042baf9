"""The run: role x template x question grid -> length-sorted batches -> result rows.

    validate config -> roles, templates, questions -> (dry run: plan and stop)
    -> the job's directory (store.py: identity, lock; a complete job stops here)
    -> load model -> placement -> prompts and requests -> batches under the token
    budget, longest first, minus what earlier attempts saved -> scores, saved batch
    by batch -> rows in grid order -> predictions.parquet, summary.json -> tracking

Everything a row needs to be understood on its own (prompt text, placement,
scoring, role attributes) is on the row.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import platform
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch

from . import __version__
from . import shard
from .config import Config, ConfigError, config_id, resolved_scoring, shard_suffix, validate
from .data import Question, data_hash, default_cache_dir, load_questions
from .generate import BATCH_FACTOR, prompt_seed
from .models import auto_batch_tokens, check_available, load_model, load_vllm_model, resolve_device
from .plan import make_plan
from .prompts import continuation, paper_cue, question_body, render, resolve_placement
from .roles import Role, Template, build_roles, build_templates, personas
from .scoring import LabelResolver, Request, Result, TokenizationError, packed_length, score_batch, suffix_ids_many
from .store import JobStore
from .summary import accuracy_summary
from .tracking import make_tracker, redact
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
    choices: list[str]  # label strings (letter, generate) or continuation strings (cloze), as fed after the prompt
    labels: tuple[str, ...] = ()  # generate: the labels shown in the prompt, for the parser
    options: tuple[str, ...] = ()  # generate: the options' text, for the parser


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
    cue = paper_cue(placement, arch)
    bodies = [question_body(q, fmt, cfg.scoring.subject_header, cue) for q in questions]
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
    unlabelled = []
    for text, add_special, prompt_ids, (q, template, role, body) in zip(texts, specials, ids, meta):
        if method == "generate":  # the labels' logits at the first generated position come with each answer
            try:
                prefix, label_ids = labels.split(text, prompt_ids, body.labels, add_special)
            except TokenizationError as e:
                prefix, label_ids = [], []
                unlabelled.append(str(e))
            seed = prompt_seed(cfg.scoring.generate.seed, sha(text))
            req = Request(prompt_ids, label_ids=label_ids, seed=seed, label_prefix=prefix)
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


def _cost(r: Request) -> int:
    """Padded tokens one request adds to a batch: its prompt plus one row per option."""
    return len(r.prompt_ids) + _option_cost(r)


def _option_cost(r: Request) -> int:
    return len(r.option_ids) * max((len(o) for o in r.option_ids), default=0)


def make_batches(items: list[Item], budget: int, subset: Optional[list[int]] = None, extra: int = 0,
                 packed: bool = False) -> list[list[int]]:
    """Indices of items (all, or `subset`) in batches, longest first, each within `budget` padded tokens.

    By default a batch costs rows x (its widest prompt + `extra`: the tokens generation adds), plus every
    row's option rows (cloze through the prompt's cache); sorting by the prompt's own length keeps the
    prompt pass's padding small. `packed` (causal cloze, scoring.packed_length): a row holds its prompt
    and its options, and a batch costs rows x its widest packed row. An over-long single item gets its
    own batch."""
    pool = range(len(items)) if subset is None else subset
    if packed:
        width = {i: packed_length(items[i].request) for i in pool}
        options = dict.fromkeys(pool, 0)
    else:
        width = {i: len(items[i].request.prompt_ids) + extra for i in pool}
        options = {i: _option_cost(items[i].request) for i in pool}
    order = sorted(pool, key=lambda i: (-width[i], -options[i], i))
    batches: list[list[int]] = []
    batch: list[int] = []
    widest = cost = 0
    for i in order:
        if batch and (len(batch) + 1) * widest + cost + options[i] > budget:
            batches.append(batch)
            batch, cost = [], 0
        if not batch:
            widest = width[i]  # the widest of its batch: the order is widest first
        batch.append(i)
        cost += options[i]
    if batch:
        batches.append(batch)
    return batches


def packs(cfg: Config, method: str) -> bool:
    """Whether a run's batches are cut for packed cloze rows (causal models; scoring.cloze_causal)."""
    return method == "cloze" and cfg.model.arch == "causal"


def batch_budget(cfg: Config, model, method: str) -> int:
    """Padded tokens per batch: model.batch_tokens, or chosen from free memory (0); generation batches get
    BATCH_FACTOR times as many (generate.py). A vLLM engine (no .device) schedules its own memory."""
    budget = cfg.model.batch_tokens or (1 << 18 if not hasattr(model, "device") else auto_batch_tokens(model, model.device, method))
    return budget * BATCH_FACTOR if method == "generate" else budget


def is_out_of_memory(e: BaseException) -> bool:
    """A CUDA or CPU allocation failure (torch raises OutOfMemoryError on CUDA, RuntimeError on CPU)."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def score_items(model, items: list[Item], cfg: Config, method: str, pad_id: int, done: dict[int, Result],
                save: Callable[[list[int], list[Result]], None],
                generator: Optional[Callable[[list[Request]], list[Result]]] = None) -> tuple[list[Result], dict]:
    """Score the items not in `done`, batch by batch, handing each finished batch to `save`
    (method=generate: `generator` answers a batch of requests; see generate.py).

    Batches are cut from the whole grid as in an uninterrupted run (so a resumed job scores the
    same batches), minus what is done. On out-of-memory the batch budget halves, with a warning,
    for this batch and the rest of the job; no prompt is lost."""
    from tqdm import tqdm

    budget = batch_budget(cfg, model, method)
    if not cfg.model.batch_tokens:
        log.info("batch budget %d tokens (model.batch_tokens=0: chosen from free memory on %s)", budget, getattr(model, "device", "cuda"))
    extra = cfg.scoring.generate.max_new_tokens if method == "generate" else 0
    packed = packs(cfg, method)
    queue = deque(b for b in ([i for i in batch if i not in done] for batch in make_batches(items, budget, extra=extra, packed=packed)) if b)
    results: dict[int, Result] = dict(done)
    n_tokens = n_scored = n_batches = 0
    t0 = time.perf_counter()
    with tqdm(total=len(items), initial=len(done), unit="prompt", disable=not cfg.progress, desc=cfg.model.name,
              smoothing=0.1) as bar:
        while queue:
            batch = queue.popleft()
            reqs = [items[i].request for i in batch]
            try:
                if method == "generate":
                    scored = generator(reqs)
                else:
                    scored = score_batch(model, reqs, cfg.model.arch, method, pad_id, cfg.scoring.cloze_score, budget)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                _free_memory()
                if len(batch) == 1:
                    raise ConfigError(f"one prompt of {len(reqs[0].prompt_ids)} tokens does not fit in memory "
                                      f"(model {cfg.model.name}); use quantization, a smaller model or a device with more memory: {e}") from None
                budget = max(1, min(budget, sum((packed_length(r) if packed else _cost(r)) + extra for r in reqs)) // 2)
                log.warning("out of memory on a batch of %d prompts; retrying with batch budget %d tokens for the "
                            "rest of the job (set model.batch_tokens=%d to start there)", len(batch), budget, budget)
                queue = deque(make_batches(items, budget, batch + [i for b in queue for i in b], extra, packed))
                continue
            save(batch, scored)
            results.update(zip(batch, scored))
            n_tokens += sum(r.cost for r in reqs) + sum(x.n_new_tokens or 0 for x in scored)
            n_scored += len(batch)
            n_batches += 1
            bar.update(len(batch))
    seconds = time.perf_counter() - t0
    timing = {
        "seconds": round(seconds, 2),
        "batches": n_batches,
        "prompts_scored": n_scored,
        "prompts_resumed": len(done),
        "batch_tokens": budget,
        "tokens": n_tokens,
        "prompts_per_s": round(n_scored / seconds, 2) if n_scored and seconds else None,
        "tokens_per_s": round(n_tokens / seconds, 1) if n_scored and seconds else None,
    }
    return [results[i] for i in range(len(items))], timing


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def rows(items: list[Item], results: list[Result], cfg: Config, placement: str, method: str, fmt: str) -> pd.DataFrame:
    """One row per prompt. method=generate adds the generated text and what the parser read from it:
    pred is the parsed option (-1 when none: it counts wrong, as in the paper), logit_pred the labels'
    logit answer at the first generated position of the same prompt (-1 when the labels are not single
    tokens)."""
    recs = []
    for it, res in zip(items, results):
        q, role = it.question, it.role
        extra = {}
        pred = res.pred
        if method == "generate":
            from .parse import parse_answer

            parsed = parse_answer(res.generation or "", it.labels, it.options)
            extra = {"generation": res.generation, "n_new_tokens": res.n_new_tokens, "parsed": parsed.parsed,
                     "parse_rule": parsed.rule, "logit_pred": res.pred, "logit_correct": res.pred == q.answer}
            pred = parsed.index if parsed.parsed else -1
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
            "pred": pred,
            "answer": q.answer,
            "correct": pred == q.answer,
            "split": q.meta.get("split"),
            **extra,
        })
    return pd.DataFrame.from_records(recs)


def prepare(cfg: Config):
    """Everything that can fail without weights: values, roles, templates, questions (this shard's), the grid."""
    validate(cfg)
    roles = build_roles(cfg.role_set)
    templates = build_templates(cfg.template)
    grid = personas(roles, templates)
    questions = shard.select(load_questions(cfg.dataset, cfg.cache_dir), cfg.shard.index, cfg.shard.count)
    if cfg.shard.count > 1:
        log.info("shard %d of %d: %d of the %d questions, with all their personas", cfg.shard.index,
                 cfg.shard.count, len(questions), questions.n_total)
    if not cfg.dry_run:
        check_available(cfg.model)  # a hub model neither cached nor reachable fails here, before any output
    return roles, templates, grid, questions


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a job. Not an Exception, so no job runner swallows it: the sweep stops."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextmanager
def interruptible():
    """Turn SIGINT and SIGTERM into Interrupted while a job runs (a second signal acts as usual)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.getsignal(s) for s in sigs}

    def handler(signum, frame):
        for s in sigs:
            signal.signal(s, old[s])
        raise Interrupted(signum)

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s in sigs:
            signal.signal(s, old[s])


def run(cfg: Config) -> dict:
    """Run one job, or continue it where an earlier attempt stopped; return its summary (the
    headline metric is summary['accuracy']['persona_mean']). A complete job is not rerun."""
    method, fmt = resolved_scoring(cfg)
    roles, templates, grid, questions = prepare(cfg)
    if cfg.dry_run:
        plan = make_plan(cfg, questions, roles, templates, grid, method, fmt)
        print(plan.render())
        return {"dry_run": plan.as_dict()}
    store = JobStore(Path(cfg.output_dir))
    store.open(cfg)
    try:
        saved = store.complete()
        if saved is not None:
            store.status("complete", n_prompts=saved.get("n_prompts"), skipped=True)
            log.info("job %s is already complete (%s prompts): results in %s; overwrite=true recomputes it",
                     config_id(cfg), saved.get("n_prompts"), store.out)
            return saved
        from .gpus import claim_device

        with interruptible(), claim_device(cfg.device, holder=str(store.out)) as device:
            cfg.device = device  # auto with several GPUs: a GPU no other job holds (gpus.py); not part of the job id
            return _run_job(cfg, store, roles, templates, grid, questions, method, fmt)
    finally:
        store.close()


def _run_job(cfg: Config, store: JobStore, roles, templates, grid, questions, method: str, fmt: str) -> dict:
    out = store.out
    tracker = make_tracker(cfg.tracking)
    saved = {"n": 0, "of": len(questions) * len(grid)}
    finished = False
    try:
        store.status("running", n_prompts=saved["of"])
        run_name = f"{cfg.model.name}-{config_id(cfg, shard=False)}{shard_suffix(cfg.shard.index, cfg.shard.count)}"
        tracker.start(redact(asdict(cfg)), out, run_name=run_name,
                      group=cfg.tracking.group or cfg.sweep_name,
                      tags=[cfg.model.name, cfg.experiment_name, *[t.name for t in templates], *cfg.tracking.tags],
                      job_type=cfg.tracking.job_type)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        vllm = method == "generate" and cfg.scoring.generate.backend == "vllm"
        load = load_vllm_model if vllm else load_model
        model, tokenizer, info = load(cfg.model, cfg.device, default_cache_dir(cfg.cache_dir))
        placement = resolve_placement(tokenizer, cfg.model.placement)
        items = build_items(questions, grid, tokenizer, cfg, placement, method, fmt)
        log.info("%d prompts: %d questions x %d personas (%d roles, templates %s + control); placement=%s, "
                 "scoring=%s/%s", len(items), len(questions), len(grid), len(roles),
                 [t.name for t in templates[1:]], placement, method, fmt)
        hashes = [sha(it.prompt) for it in items]
        done = store.load(hashes)
        saved["n"] = len(done)
        if done:
            log.info("resuming: %d of %d prompts were scored by an earlier attempt; scoring the other %d",
                     len(done), len(items), len(items) - len(done))

        def save(batch: list[int], results: list[Result]) -> None:
            store.save(batch, [hashes[i] for i in batch], results)
            saved["n"] += len(batch)

        pad_id = next(x for x in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if x is not None)
        generator = make_generator(model, tokenizer, cfg.model.arch, pad_id, cfg.scoring.generate, vllm)
        results, timing = score_items(model, items, cfg, method, pad_id, done, save,
                                      generator if method == "generate" else None)
        df = rows(items, results, cfg, placement, method, fmt)
        dev = resolve_device(cfg.device)
        tflops = matmul_tflops(info["dtype"] if info["dtype"] in ("bf16", "fp32", "fp16") else "fp32", str(dev))
        timing["matmul_tflops"] = round(tflops, 3)
        timing["utilisation"] = round(utilisation(timing["tokens_per_s"] or 0, info["n_non_embedding_params"], tflops), 3)
        summary = {
            "model": info,
            "config_id": config_id(cfg),
            "experiment": cfg.experiment_name,
            "role_set": cfg.role_set.name,
            "templates": {t.name: t.text for t in templates},
            "dataset": {"name": cfg.dataset.name, "source": cfg.dataset.source, "sample": cfg.dataset.sample,
                        "n_questions": len(questions), "data_hash": data_hash(questions)},
            "placement": placement,
            "control_system": cfg.model.control_system,
            "scoring": {"method": method, "format": fmt, "cloze_score": cfg.scoring.cloze_score,
                        **({"generate": asdict(cfg.scoring.generate)} if method == "generate" else {})},
            "shard": {"index": cfg.shard.index, "count": cfg.shard.count, "n_questions": len(questions),
                      "n_questions_total": getattr(questions, "n_total", len(questions)),
                      "whole_config_id": config_id(cfg, shard=False)},
            **accuracy_summary(df, cfg.scoring.collapse_warning),
            "throughput": timing,
            "packages": package_versions(),
        }
        summary = redact(summary)
        store.finish(df, summary)  # local results first; tracking second
        log.info("control accuracy %.4f, persona mean %.4f, by template %s; predicted labels %s; %s prompts/s, "
                 "%s tokens/s (%.0f%% of the %.2f TFLOP/s matmul rate); results in %s",
                 summary["accuracy"]["control"], summary["accuracy"]["persona_mean"], summary["accuracy"]["template"],
                 summary["pred_histogram"], timing["prompts_per_s"], timing["tokens_per_s"],
                 100 * timing["utilisation"], tflops, out)
        tracker.log_results(summary, df, out)
        finished = True
        after_run(cfg, out, model, tokenizer, grid, dev, tracker, questions, roles, placement, generator, vllm)
        tracker.finish(ok=True)
        return summary
    except Interrupted as e:
        if finished:  # the results are complete; only the optional outputs were cut short
            log.warning("%s after the results were saved in %s; the report can be written later with "
                        "python -m persona_bench.report %s", e, out, out)
            tracker.finish(ok=True)
            raise
        store.status("interrupted", reason=str(e), n_saved=saved["n"], n_prompts=saved["of"])
        log.warning("%s: %d of %d prompts are saved in %s; run the same command again to continue", e, saved["n"],
                    saved["of"], out)
        tracker.finish(ok=False)
        raise
    except BaseException as e:
        store.status("failed", reason=f"{type(e).__name__}: {e}", n_saved=saved["n"], n_prompts=saved["of"])
        if saved["n"]:
            log.error("job failed with %d of %d prompts saved in %s; fix the cause and run the same command to "
                      "continue", saved["n"], saved["of"], out)
        tracker.finish(ok=False)
        raise


def make_generator(model, tokenizer, arch: str, pad_id: int, settings, vllm: bool = False):
    """A function answering one batch of requests with generated text (generate.py; vllm_backend.py)."""
    if vllm:
        from .vllm_backend import generate_vllm

        return lambda reqs, s=settings: generate_vllm(model, reqs, s)
    from .generate import generate_batch

    return lambda reqs, s=settings: generate_batch(model, tokenizer, reqs, arch, pad_id, s)


def after_run(cfg: Config, out: Path, model, tokenizer, grid, device, tracker, questions=(), roles=(),
              placement: str = "plain", generator=None, vllm: bool = False) -> None:
    """The optional outputs of a finished job: the model's own persona pick and persona perplexity under
    the evaluated model (while it is loaded), and the job's report. Results are already saved: a failure
    here is a warning."""
    if cfg.report.self_pick and roles and generator is not None:
        try:
            from .config import GenerateConfig
            from .self_pick import MAX_NEW_TOKENS, self_pick, write_self_pick

            greedy = GenerateConfig(max_new_tokens=MAX_NEW_TOKENS)
            write_self_pick(out, self_pick(questions, [r.name for r in roles], tokenizer, placement, cfg.model.arch,
                                           cfg.model.control_system, lambda reqs: generator(reqs, greedy),
                                           batch_budget(cfg, model, "generate")))
        except Exception as e:
            log.warning("the model's own persona pick failed (%s: %s); results are saved", type(e).__name__, e)
    if cfg.report.perplexity and vllm:
        log.info("persona perplexity is not computed with the vLLM backend; python -m persona_bench.perplexity %s "
                 "computes it with transformers", out)
    elif cfg.report.perplexity:
        try:
            from .perplexity import write_perplexity

            texts = pd.DataFrame([{"template": t.name, "role": r.name, "text": t.render(r)} for t, r in grid if r is not None])
            write_perplexity(out, model, tokenizer, texts, cfg.model.arch, device)
        except Exception as e:
            log.warning("persona perplexity failed (%s: %s); results are saved; python -m persona_bench.perplexity %s "
                        "computes it later", type(e).__name__, e, out)
    if cfg.report.enabled:
        try:
            from .report import Options, write_report

            figs = write_report([out], out / "report", Options(cfg.report.n_boot, cfg.report.seed, cfg.report.similarity),
                                command=f"python -m persona_bench.report {out}")
            tracker.log_figures(figs)
        except Exception as e:
            log.warning("the report failed (%s: %s); results are saved; python -m persona_bench.report %s retries it",
                        type(e).__name__, e, out)
