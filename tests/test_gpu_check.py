"""benchmarks/gpu_check.py (and gpu_scale.py, gpu_common.py): its harness, the time budget, the --small flow's
real-shape steps on a CPU, the whole --small run, and the full check on a CUDA GPU."""

from __future__ import annotations

import datetime
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CPU_OK = ("sdpa", "bf16_letter", "bf16_cloze", "batch_invariance", "matmul", "score_7b", "generate_7b", "agree_7b",
          "score_13b", "generate_13b", "agree_13b")
BNB = ("bnb_4bit", "bnb_8bit")


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    """gpu_check.py imports its neighbours gpu_common.py and gpu_scale.py, as a script of benchmarks/ does."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(gc, args: list[str]) -> int:
    try:
        return gc.main(args)
    finally:
        from transformers.utils import logging as hf_logging

        hf_logging.enable_progress_bar()  # main() turned it off for this process


def run_script(tmp_path: Path, *args: str, timeout: int) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_a_failing_check_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    gc = load_script()

    def broken(ctx):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(gc.CHECKS, "sdpa", broken)
    monkeypatch.setitem(gc.CHECKS, "matmul", lambda ctx: {"dtype": "fp32", "square_tflops": 1.5})
    out = tmp_path / "r.json"
    rc = run_main(gc, ["--device", "cpu", "--checks", "sdpa,matmul,bnb_8bit", "--out", str(out)])
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert rc == 1 and report["ok"] is False
    assert report["checks"]["sdpa"]["status"] == "fail"
    assert "RuntimeError: planted failure" in report["checks"]["sdpa"]["error"]
    assert "planted failure" in report["checks"]["sdpa"]["traceback"]
    assert report["checks"]["matmul"] == {"status": "ok", "figures": {"dtype": "fp32", "square_tflops": 1.5},
                                          "seconds": report["checks"]["matmul"]["seconds"]}
    assert report["checks"]["bnb_8bit"]["status"] == "skip"
    assert "CHECK sdpa FAIL RuntimeError: planted failure" in printed
    assert "CHECK matmul ok dtype=fp32 square_tflops=1.5" in printed
    assert "CHECK bnb_8bit SKIP no CUDA" in printed
    assert report["versions"]["torch"] == torch.__version__ and report["device"] == "cpu"


def test_a_check_that_would_overrun_the_time_budget_is_skipped_with_a_line_saying_so(tmp_path, capsys):
    gc = load_script()
    rc = run_main(gc, ["--device", "cpu", "--small", "--budget-s", "0.001", "--checks", "matmul,score_7b",
                       "--out", f"{tmp_path}/"])
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / f"gpu_check_cpu_{datetime.date.today().isoformat()}.json").read_text())
    assert rc == 0 and report["ok"] is True and report["budget_s"] == 0.001
    for name in ("matmul", "score_7b"):
        assert report["checks"][name]["status"] == "skip"
        assert report["checks"][name]["reason"].startswith("time budget:")
        assert f"CHECK {name} SKIP time budget:" in printed


def test_gpu_specs_and_result_file_names():
    gc = load_script()
    import gpu_scale
    from gpu_common import device_slug

    assert gpu_scale.gpu_spec("NVIDIA H100 80GB HBM3")["peak_bf16_tflops"] == 989
    assert gpu_scale.gpu_spec("NVIDIA H100 80GB HBM3")["bandwidth_tbps"] == 3.35
    assert gpu_scale.gpu_spec("NVIDIA H100 PCIe")["peak_bf16_tflops"] == 756
    assert gpu_scale.gpu_spec("NVIDIA H200")["bandwidth_tbps"] == 4.8
    assert gpu_scale.gpu_spec(None)["peak_bf16_tflops"] is None  # a CPU: MFU is None, the measured ceilings remain
    assert device_slug({"gpu": "NVIDIA H100 80GB HBM3"}) == "h100-80gb-hbm3" and device_slug({}) == "cpu"
    day = datetime.date.today().isoformat()
    assert gc.out_path("results/", {"gpu": "NVIDIA H200"}) == Path(f"results/gpu_check_h200_{day}.json")
    assert gc.out_path("x.json", {"gpu": "NVIDIA H200"}) == Path("x.json")


def test_small_flow_scores_generates_and_compares_dtypes_with_paper_lengths(tmp_path, capsys, monkeypatch):
    """The real-shape steps with two-layer stand-ins on the CPU: every figure the GPU run reports is there;
    an out-of-memory error in generation halves the batch budget and the step goes on."""
    gc = load_script()
    import gpu_scale

    from persona_bench.backends.hf import HFBackend

    real_generate, calls = HFBackend.generate, []

    def generate_oom_once(self, requests, settings):
        calls.append(len(requests))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (planted)")
        return real_generate(self, requests, settings)

    monkeypatch.setattr(HFBackend, "generate", generate_oom_once)

    steps = ["score_7b", "generate_7b", "agree_7b"]
    rc = run_main(gc, ["--device", "cpu", "--small", "--checks", ",".join(steps), "--budgets", "4096,512",
                       "--out", f"{tmp_path}/"])
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / f"gpu_check_cpu_{datetime.date.today().isoformat()}.json").read_text())
    assert rc == 0 and report["ok"] is True and report["small"] is True, printed
    assert list(report["checks"]) == steps and all(f"CHECK {s} ok" in printed for s in steps)
    lengths = json.loads(gpu_scale.LENGTHS.read_text())
    score = report["checks"]["score_7b"]["figures"]
    assert score["shape"] == gpu_scale.SMALL_SHAPES["7b"] and score["dtype"] == "bf16"
    for method in ("letter", "cloze"):
        m = score[method]
        assert m["prompts"] == gpu_scale.SIZES["small"][0 if method == "letter" else 1]
        assert m["tokens_per_s"] > 0 and m["prompts_per_s"] > 0 and m["tflops"] > 0
        assert m["mfu"] is None and score["peak_bf16_tflops"] is None  # no datasheet peak for a CPU
        assert 0 < m["vs_shape_ceiling"] and 0 < m["vs_square_matmul"]
        assert {"budget_4096", "budget_512"} <= set(m) and m["budget_512"]["batches"] > m["budget_4096"]["batches"]
        assert m["budgets_compared"]["agreement"] >= 0.9 and m["budgets_compared"]["finite"]
    assert min(lengths["letter"]) <= score["letter"]["mean_prompt_tokens"] <= max(lengths["letter"])
    gen = report["checks"]["generate_7b"]["figures"]
    n, new = gen["prompts"], gen["max_new_tokens"]
    assert (n, new) == (gpu_scale.SIZES["small"][2], 8) and gen["new_tokens"] == n * new
    assert gen["oom_halvings"] == 1 and gen["batch_budget_used"] == gen["batch_budget"] // 2 and len(calls) > 1
    assert gen["tokens_per_s"] > 0 and gen["decode_tokens_per_s"] > 0 and gen["decode_bytes"] > gen["decode_weight_bytes"]
    assert gen["fraction_of_bandwidth"] is None if "fraction_of_bandwidth" in gen else gen["bandwidth_tbps"] is None
    agree = report["checks"]["agree_7b"]["figures"]
    for method in ("letter", "cloze"):
        assert agree[method]["n"] > 0 and agree[method]["finite"] and agree[method]["agreement"] >= 0.9
    assert agree["tf32"] is False and agree["agreement"] == min(agree["letter"]["agreement"], agree["cloze"]["agreement"])


def test_paper_requests_take_the_paper_grid_lengths():
    load_script()
    import gpu_scale

    lengths = json.loads(gpu_scale.LENGTHS.read_text())
    letter = gpu_scale.paper_requests(64, "letter", 32000, 0)
    cloze = gpu_scale.paper_requests(64, "cloze", 32000, 0)
    assert all(len(r.prompt_ids) in set(lengths["letter"]) and r.prompt_ids[0] == 1 for r in letter)
    assert all(len(r.label_ids) == 4 and max(r.prompt_ids) < 32000 for r in letter)
    shapes = {tuple(c) for c in lengths["cloze"]}
    assert all((len(r.prompt_ids), *map(len, r.option_ids)) in shapes for r in cloze)
    assert [r.prompt_ids for r in letter] == [r.prompt_ids for r in gpu_scale.paper_requests(64, "letter", 32000, 0)]


@pytest.mark.slow
def test_cpu_small_run(tmp_path):
    proc, report = run_script(tmp_path, "--device", "cpu", "--small", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = report["checks"]
    assert list(checks) == ["sdpa", "bf16_letter", "bf16_cloze", "batch_invariance", *BNB, *CPU_OK[4:]]
    for name in CPU_OK:
        assert checks[name]["status"] == "ok", (name, checks[name])
        assert f"CHECK {name} ok" in proc.stdout
    for name in BNB:
        assert checks[name]["status"] == "skip", (name, checks[name])
        assert f"CHECK {name} SKIP" in proc.stdout
    assert report["ok"] is True and report["versions"]["transformers"] and report["device"] == "cpu"
    assert checks["sdpa"]["figures"]["attn_implementation"] == "sdpa"
    assert checks["bf16_letter"]["figures"]["bf16_vs_fp32"]["distinct_preds_ref"] > 1  # the comparison means something
    assert checks["batch_invariance"]["figures"]["max_prob_diff_fp32"] < 1e-4
    for size in ("7b", "13b"):
        assert checks[f"score_{size}"]["figures"]["letter"]["tokens_per_s"] > 0


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_full_check_on_gpu(tmp_path):
    proc, report = run_script(tmp_path, timeout=900)
    failed = {n: c.get("error") for n, c in report["checks"].items() if c["status"] != "ok"}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:])
    assert report["gpu"] and report["checks"]["score_7b"]["figures"]["non_embedding_params"] > 6e9
