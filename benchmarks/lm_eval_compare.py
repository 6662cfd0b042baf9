"""EleutherAI's lm-evaluation-harness on exactly our prompts: the other side of a throughput comparison.

    python benchmarks/lm_eval_compare.py                             # is lm-eval importable here? (exit 2 if not)
    python benchmarks/lm_eval_compare.py --selftest                  # letter and cloze, 120 demo prompts each
    python benchmarks/lm_eval_compare.py --selftest --n 40 --scoring cloze

lm-eval is not a project dependency. Install it in a side environment that also holds
requirements.txt (this checkout's persona_bench, editable, and its pins; the runtime pins as
constraints too, so nothing of ours moves), and run this file, or benchmarks/throughput.py
--compare-lm-eval, with that environment's python:

    python -m venv /work/lmeval-venv
    /work/lmeval-venv/bin/pip install -r requirements.txt -c requirements-runtime.txt lm_eval==0.4.13

What lm-eval gets: its real HF backend (lm_eval.models.huggingface.HFLM) with its defaults
(logits cache on: single-token continuations of one context share one forward pass; no
sharing otherwise), and one `loglikelihood` request per (prompt, choice), where the
context is our prompt text and the continuation the exact string our runner scores after
it (persona_bench.run.items.Item.choices: " A" for letter, " option text" for cloze). Tokens: HFLM
encodes the context and context+continuation with the tokenizer's own special-token
default, which is our runner's add_special_tokens=True for plain prompts (Gemma: one
<bos>); chat-rendered prompts start with the BOS text, which HFLM then does not add again,
as our runner does not. The self-test checks the token ids request by request. One
difference is lm-eval's by design: it moves a context's trailing whitespace into the
continuation, so for a prompt ending in whitespace (a chat prompt ending with the assistant
header's newline; not our plain prompts, which end with "Answer:") it scores the same tokens
split one earlier; see _moved_whitespace for how predictions are put back on our split.

Predictions: argmax over a prompt's choices of the summed continuation log-likelihood
(by="sum"; letter: the one label token's log-probability, whose argmax is our label-logit
argmax) or of the per-token mean (by="mean", our cloze default), with the token counts
lm-eval itself scored (its own context/continuation split); ties go to the first choice,
as in persona_bench.scoring.requests.Result.pred.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import random
import sys
import time
from pathlib import Path
from typing import Optional

LM_EVAL_PIN = "0.4.13"  # installs with every pin of requirements.txt unchanged (pip check clean)
INSTALL = (f"python -m venv /work/lmeval-venv && /work/lmeval-venv/bin/pip install -r requirements.txt "
           f"-c requirements-runtime.txt lm_eval=={LM_EVAL_PIN}  (then run with /work/lmeval-venv/bin/python)")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
          "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def lm_eval_available() -> tuple[bool, str]:
    """(True, lm-eval's version) when lm-eval and its HF backend import in this Python; else (False, why,
    with the install command). Importing the HF backend takes about 10 s on 2 CPU cores; run_lm_eval
    needs that import anyway, so nothing is paid twice."""
    try:
        version = importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return False, (f"lm-evaluation-harness is not installed in this Python ({sys.executable}); it is not a "
                       f"project dependency. Install it in a side venv: {INSTALL}")
    try:
        importlib.import_module("lm_eval.models.huggingface")
        importlib.import_module("lm_eval.api.instance")
    except Exception as e:  # noqa: BLE001 - a broken or mismatched install fails in many ways
        return False, (f"lm_eval {version} is installed in {sys.executable} but its HF backend does not import "
                       f"({type(e).__name__}: {e}); reinstall it in a side venv: {INSTALL}")
    return True, version


def _argmax(xs: list[float]) -> int:
    """The first index of the largest value (persona_bench.scoring.requests.Result.pred's tie rule)."""
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def _memory_warning(lm, encoded: list[tuple[list[int], list[int]]], batch_size: int) -> Optional[str]:
    """lm-eval computes logits and their log-softmax over the whole vocabulary at every position of a
    batch (two float32 tensors of batch x length x vocabulary); warn when its first (longest) batch
    would take more memory than the machine has free."""
    try:
        free_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        return None
    longest = max(len(c) + len(x) for c, x in encoded)
    need = 2 * batch_size * longest * lm.model.config.vocab_size * 4
    if lm.device.type == "cpu" and need > free_kb * 1024:
        return (f"lm-eval's first batch ({batch_size} rows of {longest} tokens x {lm.model.config.vocab_size} logits, "
                f"twice in float32) needs about {need / 2**30:.1f} GiB; {free_kb / 2**20:.1f} GiB are free: "
                "use a smaller batch_size")
    return None


def _moved_whitespace(lm, prompts, choices, encoded, by: str, progress: bool) -> tuple[dict, float, list[str]]:
    """lm-eval moves a context's trailing whitespace into the continuation (_encode_pair): for a prompt
    that ends in whitespace (a chat prompt ending with the assistant header's newline) it scores
    log p(newline + choice) over n + 1 tokens where our scorer scores log p(choice | ...newline) over
    n. Summed, the difference is the same for every choice of the prompt (argmax unchanged); the
    per-token mean differs. For by="mean" the whitespace's own log-likelihood is asked of lm-eval in
    one more loglikelihood call (timed apart, not in "seconds") and taken off, with its tokens.
    Returns {prompt index: (log-likelihood, tokens) to take off}, that call's seconds, notes."""
    from lm_eval.api.instance import Instance

    moved = [k for k, p in enumerate(prompts) if p.strip() and p != p.rstrip()]
    if not moved:
        return {}, 0.0, []
    if by != "mean":
        return {}, 0.0, [f"{len(moved)} prompts end in whitespace, which lm-eval scores as part of each continuation: "
                         "the same term for every choice of a prompt, so the summed argmax is unchanged"]
    pairs = [(prompts[k].rstrip(), prompts[k][len(prompts[k].rstrip()):]) for k in moved]
    inst = [Instance(request_type="loglikelihood", doc={}, arguments=pr, idx=0, metadata=("persona_bench_ws", k, 1))
            for k, pr in zip(moved, pairs)]
    t0 = time.perf_counter()
    out = lm.loglikelihood(inst, disable_tqdm=not progress)
    seconds = time.perf_counter() - t0
    starts, pos = [], 0
    for cs in choices:
        starts.append(pos)
        pos += len(cs)
    shift, bad = {}, 0
    for k, pr, (ll, _) in zip(moved, pairs, out):
        ws_ctx, ws = lm._encode_pair(*pr)
        conts = [encoded[starts[k] + i] for i in range(len(choices[k]))]
        if all(c == ws_ctx and x[: len(ws)] == ws and len(x) > len(ws) for c, x in conts):
            shift[k] = (float(ll), len(ws))
        else:
            bad += 1
    notes = [f"{bad} prompts ending in whitespace could not be put back on our split (their whitespace tokenizes "
             "differently before a choice): their means include the whitespace token"] if bad else []
    return shift, seconds, notes


def load_hflm(model_dir: str, dtype: str = "float32", batch_size: int = 16, device: str = "cpu",
              add_bos_token: Optional[bool] = None):
    """lm-eval's HF backend on a local model directory, with its defaults otherwise.

    add_bos_token=None keeps the tokenizer's own default, which is what our runner's
    add_special_tokens=True gives for plain prompts (Gemma, Llama: BOS; Qwen: none)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model_dir, dtype=DTYPES.get(dtype, dtype), batch_size=batch_size, device=device,
                add_bos_token=add_bos_token)


def run_lm_eval(model_dir: str, prompts: list[str], choices: list[list[str]], dtype: str = "float32",
                batch_size: int = 16, device: str = "cpu", by: str = "mean", add_bos_token: Optional[bool] = None,
                lm=None, return_tokens: bool = False, progress: bool = False) -> dict:
    """lm-eval's log-likelihood of each (prompt, choice) pair and the choice it predicts per prompt.

    Returns {"pred": argmax per prompt by `by` ("sum" | "mean" per token), "seconds": wall time of the
    loglikelihood call (lm-eval's own tokenization included, model loading not), "n_requests",
    "version", "loglik": summed log-likelihoods per prompt and choice, "n_tokens": continuation
    tokens lm-eval scored (both on our context/continuation split where lm-eval moved a prompt's
    trailing whitespace into the continuation and by="mean": see _moved_whitespace),
    "tokenize_seconds": the same (context, continuation) encoding done once more beforehand to
    count tokens (about what lm-eval spends tokenizing inside "seconds"), "whitespace_corrected",
    "correction_seconds", "warning": notes (memory, whitespace) or None; with return_tokens,
    "context_ids" per prompt and "continuation_ids" per prompt and choice, as lm-eval feeds them}.
    `lm`: an HFLM already loaded (load_hflm) instead of loading model_dir here."""
    if by not in ("sum", "mean"):
        raise ValueError(f"by={by!r}; valid: sum, mean")
    if len(prompts) != len(choices):
        raise ValueError(f"{len(prompts)} prompts but {len(choices)} choice lists")
    if any(not p for p in prompts) or any(not c for c in choices):
        raise ValueError("every prompt must be non-empty and have at least one choice")
    from lm_eval.api.instance import Instance

    version = importlib.metadata.version("lm_eval")
    if lm is None:
        lm = load_hflm(model_dir, dtype, batch_size, device, add_bos_token)
    pairs = [(p, c) for p, cs in zip(prompts, choices) for c in cs]
    t0 = time.perf_counter()
    encoded = [lm._encode_pair(p, c) for p, c in pairs]  # lm-eval's own split: the tokens it scores
    tokenize_seconds = time.perf_counter() - t0
    warning = _memory_warning(lm, encoded, lm.batch_size if isinstance(lm.batch_size, int) else batch_size)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i, metadata=("persona_bench", k, 1))
                 for k, i, pair in ((k, i, (p, c)) for k, (p, cs) in enumerate(zip(prompts, choices))
                                    for i, c in enumerate(cs))]
    t0 = time.perf_counter()
    out = lm.loglikelihood(instances, disable_tqdm=not progress)
    seconds = time.perf_counter() - t0
    shift, correction_seconds, notes = _moved_whitespace(lm, prompts, choices, encoded, by, progress)
    if warning:
        notes.insert(0, warning)
    loglik, n_tokens, preds, ctx_ids, cont_ids = [], [], [], [], []
    pos = 0
    for k, cs in enumerate(choices):
        lls = [float(ll) for ll, _ in out[pos : pos + len(cs)]]
        ns = [len(cont) for _, cont in encoded[pos : pos + len(cs)]]
        if k in shift:  # our split: the prompt's trailing whitespace token(s) belong to the context
            ll0, n0 = shift[k]
            lls, ns = [x - ll0 for x in lls], [x - n0 for x in ns]
        scores = [s / max(n, 1) for s, n in zip(lls, ns)] if by == "mean" else lls
        loglik.append(lls)
        n_tokens.append(ns)
        preds.append(_argmax(scores))
        if return_tokens:
            ctx_ids.append(encoded[pos][0])
            cont_ids.append([cont for _, cont in encoded[pos : pos + len(cs)]])
        pos += len(cs)
    res = {"pred": preds, "seconds": seconds, "n_requests": len(instances), "version": version, "loglik": loglik,
           "n_tokens": n_tokens, "tokenize_seconds": tokenize_seconds, "by": by,
           "whitespace_corrected": len(shift), "correction_seconds": correction_seconds,
           "warning": "; ".join(notes) or None}
    if return_tokens:
        res["context_ids"], res["continuation_ids"] = ctx_ids, cont_ids
    return res


# --------------------------------------------------------------------------- self-test
def _demo_items(method: str, per_subject: int, n: int, seed: int):
    """n prompts of the demo study (demo roles, speaker + audience templates and the control), built
    by our runner for `method`, sampled with a seed; with the job, its backend (the model loaded) and
    the model's directory."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from persona_bench.config import default_cache_dir, register
    from persona_bench.models.hub import register_resolvers
    from persona_bench.models.loading import model_dir
    from persona_bench.run.setup import setup

    register()
    register_resolvers()  # ${hf:...}: model=hf
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        dcfg = compose("config", overrides=["output_dir=/tmp/lm_eval_compare", "progress=false", "tracking=none",
                                            "device=cpu", "model.dtype=fp32", f"scoring={method}",
                                            f"dataset.per_subject={per_subject}"])
    cfg = OmegaConf.to_object(dcfg)
    job, backend, items = setup(cfg)
    keep = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    where, _, _ = model_dir(cfg.model, default_cache_dir(cfg.cache_dir))
    return job, backend, [items[i] for i in keep], str(where)


def _token_check(items, method: str, lm_res: dict) -> dict:
    """Our token ids against lm-eval's, request by request: the context (our prompt_ids) and each
    continuation (our label id for letter, our option ids for cloze)."""
    ctx_same = sum(it.request.prompt_ids == c for it, c in zip(items, lm_res["context_ids"]))
    cont_same = cont_all = 0
    for it, conts in zip(items, lm_res["continuation_ids"]):
        ours = [[x] for x in it.request.label_ids] if method == "letter" else it.request.option_ids
        cont_all += len(conts)
        cont_same += sum(a == b for a, b in zip(ours, conts))
    return {"contexts_identical": ctx_same, "contexts": len(items), "continuations_identical": cont_same,
            "continuations": cont_all}


def selftest(method: str, n: int, per_subject: int, batch_size: int, seed: int, rounds: int, lm_holder: dict) -> dict:
    """Our scorer and lm-eval on the same n demo prompts. After a warm-up of each, the prompts are
    scored in `rounds` interleaved parts, ours first in even rounds and lm-eval first in odd ones,
    so that both meet the same load on a shared machine; times are summed over the parts."""
    import torch

    from persona_bench.models.cost import matmul_tflops
    from persona_bench.run.batching import score_items

    job, backend, items, where = _demo_items(method, per_subject, n, seed)
    cfg, method, tok, info = job.cfg, job.method, backend.tokenizer, backend.info
    by = cfg.scoring.cloze_score if method == "cloze" else "sum"
    print(f"\n== {method} ({job.fmt} format, placement {job.placement}, {info['dtype']}, {torch.get_num_threads()} threads): "
          f"{len(items)} demo prompts, {sum(len(it.choices) for it in items)} (prompt, choice) requests, "
          f"{sum(len(it.request.prompt_ids) for it in items)} prompt tokens; first prompt starts with token "
          f"{items[0].request.prompt_ids[:1]} ({tok.bos_token}={tok.bos_token_id})")
    if "lm" not in lm_holder:
        t0 = time.perf_counter()
        lm_holder["lm"] = load_hflm(where, "float32", batch_size, "cpu")
        print(f"lm-eval HFLM loaded {where} in {time.perf_counter() - t0:.1f} s (add_bos_token=None: the tokenizer's "
              f"default; HFLM dtype {lm_holder['lm'].model.dtype}, batch {lm_holder['lm'].batch_size})")
    hflm = lm_holder["lm"]

    def ours(part):
        return score_items(backend, part, job, {}, lambda batch, res: None)

    def theirs(part, tokens=False):
        return run_lm_eval(where, [it.prompt for it in part], [it.choices for it in part], "float32", batch_size,
                           "cpu", by=by, lm=hflm, return_tokens=tokens)

    ours(items[:2])  # warm-up: first-call costs (allocator, oneDNN kernels) out of the timings
    theirs(items[:1])
    tflops0 = matmul_tflops("fp32", "cpu")
    results: list = [None] * len(items)
    lm_pred: list = [None] * len(items)
    lm_ll: list = [None] * len(items)
    lm_n: list = [None] * len(items)
    ctx_ids: list = [None] * len(items)
    cont_ids: list = [None] * len(items)
    ours_s = lm_s = tok_s = 0.0
    n_req = 0
    for r in range(rounds):
        idx = list(range(r, len(items), rounds))
        part = [items[i] for i in idx]
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            if side == 0:
                res, timing = ours(part)
                ours_s += timing["seconds"]
                for i, x in zip(idx, res):
                    results[i] = x
            else:
                lm = theirs(part, tokens=True)
                lm_s += lm["seconds"]
                tok_s += lm["tokenize_seconds"]
                n_req += lm["n_requests"]
                for j, i in enumerate(idx):
                    lm_pred[i], lm_ll[i], lm_n[i] = lm["pred"][j], lm["loglik"][j], lm["n_tokens"][j]
                    ctx_ids[i], cont_ids[i] = lm["context_ids"][j], lm["continuation_ids"][j]
    tflops1 = matmul_tflops("fp32", "cpu")
    tc = _token_check(items, method, {"context_ids": ctx_ids, "continuation_ids": cont_ids})
    ours_pred = [x.pred for x in results]
    agree = sum(a == b for a, b in zip(ours_pred, lm_pred)) / len(items)
    # Score differences: letter, the label softmax (ours over label logits, lm-eval's over label log-probs:
    # the same quantity); cloze, the deciding per-option score.
    if method == "letter":
        diffs = [abs(p - q) for x, ll in zip(results, lm_ll)
                 for p, q in zip(x.probs, torch.softmax(torch.tensor(ll, dtype=torch.float64), 0).tolist())]
        what = "label probability"
    else:
        diffs = [abs(a - (s / k if by == "mean" else s)) for x, ll, ns in zip(results, lm_ll, lm_n)
                 for a, s, k in zip(x.scores, ll, ns)]
        what = f"option score ({by} log-likelihood)"
    acc_ours = sum(p == it.question.answer for p, it in zip(ours_pred, items)) / len(items)
    acc_lm = sum(p == it.question.answer for p, it in zip(lm_pred, items)) / len(items)
    ours_pps, lm_pps = len(items) / ours_s, len(items) / lm_s
    print(f"token ids: contexts identical {tc['contexts_identical']}/{tc['contexts']}, continuations identical "
          f"{tc['continuations_identical']}/{tc['continuations']}")
    print(f"fp32 matmul rate before/after: {tflops0:.3f}/{tflops1:.3f} TFLOP/s; {rounds} interleaved rounds")
    print(f"persona-bench: {len(items)} prompts in {ours_s:.1f} s = {ours_pps:.2f} prompts/s "
          f"(batch_tokens {cfg.model.batch_tokens})")
    print(f"lm-eval {importlib.metadata.version('lm_eval')}: {len(items)} prompts ({n_req} requests) in {lm_s:.1f} s = "
          f"{lm_pps:.2f} prompts/s (batch {batch_size}; its tokenization ~{tok_s:.2f} s of that)")
    print(f"ratio: persona-bench is {ours_pps / lm_pps:.2f}x lm-eval's prompts/s; identical predictions {agree:.2%} "
          f"({round(agree * len(items))}/{len(items)}); max |difference| in {what} {max(diffs):.2e}; "
          f"accuracy ours {acc_ours:.3f}, lm-eval {acc_lm:.3f}")
    return {"method": method, "n": len(items), "ours_pps": ours_pps, "lm_pps": lm_pps, "ratio": ours_pps / lm_pps,
            "agreement": agree, "tokens": tc, "max_diff": max(diffs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selftest", action="store_true", help="our scorer and lm-eval on the same demo prompts")
    ap.add_argument("--scoring", default="both", choices=["both", "letter", "cloze"])
    ap.add_argument("--n", type=int, default=120, help="prompts per scoring method (seeded sample of the demo grid)")
    ap.add_argument("--per-subject", type=int, default=2, help="questions per subject of the demo grid sampled from")
    ap.add_argument("--batch-size", type=int, default=16, help="lm-eval's batch size (requests per forward pass)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved parts, alternating which side goes first")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    ok, why = lm_eval_available()
    if not ok:
        print(why)
        sys.exit(2)
    print(f"lm-eval {why}: HF backend imported in {time.perf_counter() - t0:.1f} s")
    if not args.selftest:
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = ["letter", "cloze"] if args.scoring == "both" else [args.scoring]
    holder: dict = {}
    out = [selftest(m, args.n, args.per_subject, args.batch_size, args.seed, args.rounds, holder) for m in methods]
    bad = [o["method"] for o in out if o["tokens"]["contexts_identical"] != o["tokens"]["contexts"]
           or o["tokens"]["continuations_identical"] != o["tokens"]["continuations"]]
    if bad:
        print(f"token ids differ for {bad}")
        sys.exit(1)


if __name__ == "__main__":
    main()
