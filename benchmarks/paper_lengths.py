"""Token lengths of the paper grid's prompts, for benchmarks/gpu_scale.py's random-token requests.

    python benchmarks/paper_lengths.py                     # writes benchmarks/results/paper_prompt_lengths.json
    python benchmarks/paper_lengths.py --questions 300 --samples 4096

It builds the prompts of `experiment=paper` (all 162 roles, the four templates and the control) on
a seeded random subset of the paper's questions with the project's own prompt builder
(persona_bench.run.items.build_items), tokenizes them with the embedded model's tokenizer (Gemma 3;
no Llama tokenizer is available offline), and keeps a seeded uniform sample of the grid: each
letter prompt's length (MMLU format), and each cloze prompt's length with its four options'.
The GPU check has no network, no tokenizer of the 7B/13B shapes and no MMLU: it draws random token
ids of these lengths.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

# throughput.py is this script's neighbour in benchmarks/ (first on sys.path when a script of that folder runs).
from throughput import compose

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "paper_prompt_lengths.json"


class TokenizerOnly:
    """What run.setup.attach needs of a backend to build the items: the tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def grid_requests(method: str, questions: int, tokenizer) -> list:
    from persona_bench.run.job import Job
    from persona_bench.run.setup import attach

    cfg = compose(["experiment=paper", f"scoring={method}", f"dataset.limit={questions}"])
    job = Job.prepare(cfg)
    _, items = attach(job, TokenizerOnly(tokenizer))
    return [it.request for it in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=300, help="random questions of the paper's sample (seeded)")
    ap.add_argument("--samples", type=int, default=4096, help="prompts kept, uniformly from the grid (seeded)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from persona_bench.models.loading import model_dir

    t = time.perf_counter()
    cfg = compose([])
    where, kwargs, _ = model_dir(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(where, **{k: v for k, v in kwargs.items() if k != "trust_remote_code"})
    letter = grid_requests("letter", args.questions, tokenizer)
    cloze = grid_requests("cloze", args.questions, tokenizer)
    assert len(letter) == len(cloze), (len(letter), len(cloze))  # the same grid, in the same order
    pick = sorted(random.Random(0).sample(range(len(letter)), min(args.samples, len(letter))))
    out = {
        "what": "token lengths of prompts sampled uniformly from the paper grid (experiment=paper: 162 roles x 4 "
                "templates + control) on random questions of the paper's sample; letter = MMLU format; cloze = "
                "[prompt, option 1..4] in the cloze format",
        "tokenizer": f"{cfg.model.name} (Gemma 3, vocabulary {len(tokenizer)})",
        "questions": args.questions,
        "grid_prompts": len(letter),
        "letter": [len(letter[i].prompt_ids) for i in pick],
        "cloze": [[len(cloze[i].prompt_ids), *(len(o) for o in cloze[i].option_ids)] for i in pick],
    }
    args.out.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    lt = out["letter"]
    print(f"{len(pick)} of {len(letter)} grid prompts: letter mean {statistics.mean(lt):.1f} tokens "
          f"(median {statistics.median(lt)}, max {max(lt)}); cloze prompt + options mean "
          f"{statistics.mean(sum(c) for c in out['cloze']):.1f}; {time.perf_counter() - t:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
