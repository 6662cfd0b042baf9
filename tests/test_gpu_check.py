"""benchmarks/gpu_check.py: its harness, the CPU fast mode end to end, and the full check on a CUDA GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CPU_OK = ("sdpa", "bf16_letter", "bf16_cloze", "batch_invariance", "matmul", "throughput")
BNB = ("bnb_4bit", "bnb_8bit")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    try:
        rc = gc.main(["--device", "cpu", "--checks", "sdpa,matmul,bnb_8bit", "--out", str(out)])
    finally:
        from transformers.utils import logging as hf_logging

        hf_logging.enable_progress_bar()  # main() turned it off for this process
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


@pytest.mark.slow
def test_cpu_fast_mode(tmp_path):
    proc, report = run_script(tmp_path, "--device", "cpu", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = report["checks"]
    assert list(checks) == ["sdpa", "bf16_letter", "bf16_cloze", "batch_invariance", *BNB, "matmul", "throughput"]
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
    tp = checks["throughput"]["figures"]
    assert tp["tokens_per_s"] > 0 and 0 < tp["mfu"] < 1.5 and tp["budgets_compared"]["agreement"] >= 0.9


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_full_check_on_gpu(tmp_path):
    proc, report = run_script(tmp_path, timeout=900)
    failed = {n: c.get("error") for n, c in report["checks"].items() if c["status"] != "ok"}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:])
    assert report["gpu"] and report["checks"]["throughput"]["figures"]["non_embedding_params"] > 6e9
