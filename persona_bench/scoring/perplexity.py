"""The perplexity of each persona sentence under the evaluated model (paper, section 5: are personas
the model finds more predictable more helpful?).

What is scored is the persona sentence alone ("You are a doctor."), not the sentence inside the
prompt (no chat template, no question), so that every persona of a model is measured the same way:

  causal   the sentence's tokens with the tokenizer's BOS in front when it has one; the loss covers
           every sentence token (BOS is context only). Without a BOS the first token has no context
           and is not scored (n_tokens = tokens - 1).
  seq2seq  the sentence as the decoder target (no EOS) after the decoder start token, with an empty
           encoder input (what tokenizer("") gives: T5's "</s>"; the EOS token where it gives nothing).

perplexity = exp(nll_mean), nll_mean = mean negative log-likelihood (nats) over the scored tokens.

For runs that did not compute it (writes perplexity.parquet into each run dir):

    python -m persona_bench.scoring.perplexity RUN_DIR [RUN_DIR ...] [--device cpu] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from persona_bench.outputs import (
    JOB,
    PERPLEXITY,
    SUMMARY,
    write_atomic,
)


def _batches(order: list[int], size: int):
    for i in range(0, len(order), size):
        yield order[i:i + size]


def _pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def _token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of NLL, count) per row over positions where mask is 1; log-softmax in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    m = mask.float()
    return (nll * m).sum(dim=1), m.sum(dim=1)


@torch.no_grad()
def persona_perplexity(model, tokenizer, texts: list[str], arch: str = "causal", device="cpu",
                       batch_size: int = 32) -> list[dict]:
    """[{n_tokens, nll_mean, perplexity}] in the order of `texts` (see the module docstring for what is
    scored). Batched (right padding, sorted by length, longest first), no_grad, log-softmax in fp32.
    nll_mean and perplexity are None for a sentence with no token to score."""
    if arch not in ("causal", "seq2seq"):
        raise ValueError(f"arch={arch!r}; valid: causal, seq2seq")
    device = torch.device(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    toks = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if arch == "causal":
        bos = tokenizer.bos_token_id
        seqs = [([bos] if bos is not None else []) + t for t in toks]
    else:
        enc = tokenizer("", add_special_tokens=True)["input_ids"] or [tokenizer.eos_token_id]
        start = model.config.decoder_start_token_id
        if start is None:
            start = pad
        seqs = [[start] + t for t in toks]  # decoder inputs; targets are seqs shifted by one
    order = sorted(range(len(texts)), key=lambda i: -len(seqs[i]))
    out: list[Optional[dict]] = [None] * len(texts)
    for idx in _batches(order, batch_size):
        ids, mask = _pad([seqs[i] for i in idx], pad)
        ids, mask = ids.to(device), mask.to(device)
        if arch == "causal":
            logits = model(input_ids=ids, attention_mask=mask).logits
        else:
            e = torch.tensor([enc] * len(idx), dtype=torch.long, device=device)
            logits = model(input_ids=e, attention_mask=torch.ones_like(e), decoder_input_ids=ids,
                           decoder_attention_mask=mask).logits
        s, n = _token_nll(logits[:, :-1], ids[:, 1:], mask[:, 1:])
        for j, i in enumerate(idx):
            k = int(n[j])
            nll = float(s[j]) / k if k else None
            out[i] = {"n_tokens": k, "nll_mean": nll, "perplexity": math.exp(nll) if nll is not None else None}
    return out  # type: ignore[return-value]


def write_perplexity(out_dir, personas_df: pd.DataFrame, res: list[dict]) -> pd.DataFrame:
    """out_dir/perplexity.parquet (atomic): personas_df's (template, role, text) plus the n_tokens, nll_mean
    and perplexity measured for each text (`res`, in order). Returns the table."""
    table = personas_df[["template", "role", "text"]].reset_index(drop=True).copy()
    for key in ("n_tokens", "nll_mean", "perplexity"):
        table[key] = [r[key] for r in res]
    path = Path(out_dir) / PERPLEXITY
    write_atomic(path, lambda p: table.to_parquet(p, index=False))
    return table


# --------------------------------------------------------------------------- command line


def _run_plan(run_dir: Path) -> tuple[dict, pd.DataFrame, Optional[str]]:
    """(identity.model, personas (template, role, text), the dtype the run used per summary.json or None)."""
    from persona_bench.inputs.roles import persona_texts, roles_of_run

    job = json.loads((run_dir / JOB).read_text())
    ident = job["identity"]
    summary = json.loads((run_dir / SUMMARY).read_text()) if (run_dir / SUMMARY).exists() else {}
    templates = ident.get("template") or summary.get("templates") or {}
    texts = persona_texts(templates, roles_of_run(ident))
    return ident["model"], texts, (summary.get("model") or {}).get("dtype")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m persona_bench.scoring.perplexity", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory (holds job.json)")
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N (default cpu)")
    ap.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 | auto; default: the dtype the run used "
                    "(summary.json), else the model config's")
    ap.add_argument("--cache-dir", default=None, help="persona_bench cache (default $PERSONA_BENCH_CACHE or "
                    "~/.cache/persona_bench)")
    args = ap.parse_args(argv)

    from persona_bench.config.schema import ModelConfig, default_cache_dir
    from persona_bench.models.devices import resolve_device, resolve_dtype
    from persona_bench.models.loading import load_model

    loaded: dict[str, tuple] = {}
    for d in map(Path, args.run_dirs):
        if not (d / JOB).exists():
            print(f"{d}: no job.json; not a run directory", file=sys.stderr)
            return 2
        model_cfg, texts, run_dtype = _run_plan(d)
        cfg = ModelConfig(**model_cfg)
        cfg.dtype = args.dtype or run_dtype or cfg.dtype
        key = json.dumps(model_cfg, sort_keys=True) + cfg.dtype
        if key not in loaded:
            dev = resolve_device(args.device)
            print(f"loading model {cfg.name}: path {cfg.path} (source {cfg.source}, revision {cfg.revision}"
                  f"{', gguf ' + cfg.gguf_file if cfg.gguf_file else ''}), arch {cfg.arch}, dtype "
                  f"{resolve_dtype(cfg.dtype, dev, cfg.arch)}, quantization {cfg.quantization}, device {dev}",
                  flush=True)
            loaded.clear()  # one model in memory at a time
            model, tok, info = load_model(cfg, args.device, default_cache_dir(args.cache_dir))
            loaded[key] = (model, tok, info)
        model, tok, info = loaded[key]
        t0 = time.perf_counter()
        table = write_perplexity(d, texts, persona_perplexity(model, tok, list(texts["text"]), cfg.arch, info["device"]))
        print(f"{d / PERPLEXITY}: {len(table)} personas in {time.perf_counter() - t0:.2f} s "
              f"(perplexity {table['perplexity'].min():.1f} to {table['perplexity'].max():.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
