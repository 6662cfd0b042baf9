"""Scoring throughput of the embedded model against this machine's matmul rate, in one process.

    python tools/bench_scoring.py                     # demo personas, 2 questions per subject
    python tools/bench_scoring.py --per-subject 8 --batch-tokens 2048 4096 8192

Prints prompts/s, tokens/s, the dense matmul rate (TFLOP/s) measured in the same
process, and two utilisations: the issue's measure (2 x non-embedding parameters
per token) and the full one that also counts the output layer where cloze scoring
needs it (every continuation token's log-probability needs all 262,144 logits).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from persona_bench.config import register  # noqa: E402
from persona_bench.data import default_cache_dir  # noqa: E402
from persona_bench.models import load_model  # noqa: E402
from persona_bench.prompts import resolve_placement  # noqa: E402
from persona_bench.runner import build_items, prepare, score_items  # noqa: E402
from persona_bench.throughput import matmul_tflops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-subject", type=int, default=2, help="questions per subject of the paper sample")
    ap.add_argument("--batch-tokens", type=int, nargs="+", default=[4096], help="token budgets to compare")
    ap.add_argument("--scoring", default="auto", help="auto | letter | cloze")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. model.dtype=fp32")
    args = ap.parse_args()
    register()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        dcfg = compose("config", overrides=["output_dir=/tmp/bench", "progress=false", f"scoring={args.scoring}",
                                            f"dataset.per_subject={args.per_subject}", *args.overrides])
    cfg = OmegaConf.to_object(dcfg)
    from persona_bench.config import resolved_scoring

    method, fmt = resolved_scoring(cfg)
    _, _, grid, questions = prepare(cfg)
    model, tok, info = load_model(cfg.model, cfg.device, default_cache_dir(cfg.cache_dir))
    placement = resolve_placement(tok, cfg.model.placement)
    t = time.perf_counter()
    items = build_items(questions, grid, tok, cfg, placement, method, fmt)
    print(f"{len(items)} prompts built and tokenized in {time.perf_counter() - t:.1f} s")
    vocab_flops = 2 * model.get_output_embeddings().weight.numel()
    non_emb = info["n_non_embedding_params"]
    for budget in args.batch_tokens:
        cfg.model.batch_tokens = budget
        tflops = matmul_tflops(info["dtype"], info["device"])
        _, timing = score_items(model, items, cfg, method, tok.pad_token_id, {}, lambda batch, results: None)
        n_head = sum(len(o) for it in items for o in it.request.option_ids) if method == "cloze" else len(items)
        full = (timing["tokens"] * 2 * non_emb + n_head * vocab_flops) / timing["seconds"] / 1e12
        issue = timing["tokens_per_s"] * 2 * non_emb / 1e12
        print(f"batch_tokens={budget} {info['dtype']} {method}: {timing['prompts_per_s']:.1f} prompts/s, "
              f"{timing['tokens_per_s']:.0f} tokens/s in {timing['seconds']:.0f} s; matmul {tflops:.3f} TFLOP/s; "
              f"utilisation {issue / tflops:.0%} (2 x non-embedding params/token), "
              f"{full / tflops:.0%} (with the output layer: {full:.3f} TFLOP/s)")


if __name__ == "__main__":
    main()
