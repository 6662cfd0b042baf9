"""Launchers (conf/hydra/launcher/) and one GPU per job (persona_bench/models/gpus.py).

No SLURM cluster and no GPU here: the SLURM preset is checked by composing it and by the sbatch
script the real launcher writes (a fake `sbatch` on PATH keeps the script and refuses the job);
GPU claiming runs among fake GPU names in separate processes; the parallel preset's real sweep of
two tiny jobs is in tests/test_report.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import CONF, ROOT, tiny_cfg
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from persona_bench.models import gpus
from persona_bench.models.gpus import claim_device
from persona_bench.run import runner

SBATCH_VARS = ("SBATCH_PARTITION", "SBATCH_ACCOUNT", "SBATCH_QOS", "SBATCH_TIMELIMIT")


def launcher(overrides: list[str], project: bool = False) -> dict:
    """hydra.launcher, resolved, composed with the project's config (project=True, ~2 s) or alone."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config" if project else None, overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.fixture
def no_sbatch_env(monkeypatch):
    for name in SBATCH_VARS:
        monkeypatch.delenv(name, raising=False)


# -- SLURM ---------------------------------------------------------------------------------------
def test_slurm_preset_one_gpu_per_job_and_cluster_defaults(no_sbatch_env):
    launch = launcher(["hydra/launcher=slurm"], project=True)
    assert launch["_target_"].endswith("SlurmLauncher")
    assert (launch["gpus_per_node"], launch["tasks_per_node"], launch["nodes"]) == (1, 1, 1)
    assert launch["partition"] is None and launch["account"] is None and launch["qos"] is None
    assert launch["timeout_min"] == 1440 and launch["cpus_per_task"] == 8 and launch["mem_gb"] == 64
    assert launch["submitit_folder"] == "multirun/demo/.submitit/%j"  # under the sweep directory


def test_slurm_preset_takes_sbatch_variables_and_the_command_line_wins(no_sbatch_env, monkeypatch):
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    monkeypatch.setenv("SBATCH_ACCOUNT", "myproj")
    monkeypatch.setenv("SBATCH_TIMELIMIT", "600")
    launch = launcher(["hydra/launcher=slurm"])
    assert (launch["partition"], launch["account"], launch["timeout_min"]) == ("gpu", "myproj", 600)
    launch = launcher(["hydra/launcher=slurm", "hydra.launcher.partition=a100", "hydra.launcher.timeout_min=90",
                       "hydra.launcher.array_parallelism=4"])
    assert (launch["partition"], launch["account"], launch["timeout_min"]) == ("a100", "myproj", 90)
    assert launch["array_parallelism"] == 4


@pytest.fixture
def fake_slurm(tmp_path):
    """A PATH with an `sbatch` that copies the script it is given to $FAKE_SBATCH_OUT and fails
    (so nothing waits for a job), and an `srun` (submitit checks that it exists)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$FAKE_SBATCH_OUT"\n'
                                    'echo "sbatch: error: fake sbatch: nothing submitted" >&2\nexit 1\n')
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


@pytest.mark.slow
def test_slurm_launcher_writes_the_sbatch_script(fake_slurm, tmp_path):
    """The real launcher, from run.py -m, turns the composed preset into this job array script."""
    script = tmp_path / "script.sh"
    env = {k: v for k, v in os.environ.items() if k not in SBATCH_VARS + ("HF_TOKEN", "WANDB_API_KEY")}
    env.update(PATH=f"{fake_slurm}:{env['PATH']}", FAKE_SBATCH_OUT=str(script), SBATCH_PARTITION="gpu",
               SBATCH_ACCOUNT="myproj")
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=slurm", "model=flan,opt",
                        "hydra.launcher.timeout_min=600", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "fake sbatch: nothing submitted" in p.stderr, p.stderr[-2000:]
    text = script.read_text()
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=8", "--mem=64GB",
                 "--partition=gpu", "--account=myproj", "--time=600", "--array=0-1%2", "--job-name=persona_bench",
                 "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in text, (line, text)
    assert f"--output={tmp_path / 'sweep'}/.submitit/%A_%a/" in text
    assert "submitit.core._submit" in text and "--qos" not in text


# -- parallel jobs on one machine ----------------------------------------------------------------
def test_parallel_preset_composes(monkeypatch):
    monkeypatch.delenv("PERSONA_BENCH_N_JOBS", raising=False)
    launch = launcher(["hydra/launcher=parallel"], project=True)
    assert launch["_target_"].endswith("JoblibLauncher")
    assert (launch["n_jobs"], launch["backend"], launch["prefer"]) == (2, "loky", "processes")
    assert launcher(["hydra/launcher=parallel", "hydra.launcher.n_jobs=8"])["n_jobs"] == 8
    monkeypatch.setenv("PERSONA_BENCH_N_JOBS", "4")
    assert launcher(["hydra/launcher=parallel"])["n_jobs"] == 4


# -- one GPU per job -----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    monkeypatch.setattr(gpus, "_last_index", None)  # the GPU "this process" claimed last


CLAIMER = textwrap.dedent("""
    import logging, sys
    from persona_bench.models.gpus import claim_device
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    with claim_device("auto", holder=sys.argv[2], gpus=["GPU-aaaa", "GPU-bbbb"], lock_dir=sys.argv[1], poll_s=0.05,
                      log_every_s=0.5) as device:
        print(device, flush=True)
        sys.stdin.readline()  # hold the GPU until told to release it (a line, or stdin closed)
    print("released", flush=True)
""")


def claimer(lock_dir: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(lock_dir), name], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_processes_get_distinct_gpus_wait_when_all_are_held_and_a_crash_frees_its_gpu(tmp_path):
    a, b = claimer(tmp_path, "job-a"), claimer(tmp_path, "job-b")
    procs = [a, b]
    try:
        got = {a.stdout.readline().strip(), b.stdout.readline().strip()}
        assert got == {"cuda:0", "cuda:1"}
        c = claimer(tmp_path, "job-c")
        procs.append(c)
        deadline = time.monotonic() + 30
        err = ""
        while "waiting for one to be free" not in err and time.monotonic() < deadline:
            line = c.stderr.readline()
            if not line:  # the process ended
                break
            err += line
        assert "all 2 GPUs are held" in err and "job-a" in err and "job-b" in err, err
        assert c.poll() is None
        a.kill()  # a crash: the kernel drops its lock
        a.wait(10)
        assert c.stdout.readline().strip() in {"cuda:0", "cuda:1"}
        b.stdin.write("\n")
        b.stdin.flush()
        assert b.stdout.readline().strip() == "released" and b.wait(10) == 0
        c.stdin.close()
        assert c.stdout.readline().strip() == "released" and c.wait(10) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_claims_in_one_process_are_distinct_released_and_sticky(tmp_path):
    fake = ["GPU-aaaa", "GPU-bbbb", "GPU-cccc"]
    with claim_device("auto", gpus=fake, lock_dir=tmp_path) as first:
        with claim_device("cuda", gpus=fake, lock_dir=tmp_path) as second:
            assert (first, second) == ("cuda:0", "cuda:1")
        with claim_device("auto", gpus=fake, lock_dir=tmp_path) as again:
            assert again == "cuda:1"  # this process's last GPU first: a worker keeps one CUDA context
    with claim_device("auto", gpus=fake, lock_dir=tmp_path) as free:
        assert free == "cuda:1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-GPU-aaaa.lock", "gpu-GPU-bbbb.lock"]  # by GPU name


@pytest.mark.parametrize("device,fake", [("cuda:1", ["GPU-a", "GPU-b"]), ("cpu", ["GPU-a", "GPU-b"]),
                                         ("auto", ["GPU-a"]), ("auto", [])])
def test_nothing_is_claimed_for_an_explicit_device_or_fewer_than_two_gpus(tmp_path, device, fake):
    with claim_device(device, gpus=fake, lock_dir=tmp_path / "locks") as got:
        assert got == device
    assert not (tmp_path / "locks").exists()


def test_an_unusable_lock_directory_is_one_clear_error(tmp_path):
    from persona_bench.config.errors import ConfigError

    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="PERSONA_BENCH_GPU_LOCKS"):
        with claim_device("auto", gpus=["a", "b"], lock_dir=tmp_path / "file" / "locks"):
            pass


def test_run_gives_the_job_its_claimed_gpu(tiny_model_dir, tmp_path, monkeypatch):
    """runner.run: with device=auto and (fake) GPUs, the job runs with the GPU it claimed."""
    monkeypatch.setenv("PERSONA_BENCH_GPU_LOCKS", str(tmp_path / "locks"))
    monkeypatch.setattr(gpus, "visible_gpus", lambda: ["GPU-aaaa", "GPU-bbbb"])
    seen = []
    monkeypatch.setattr(runner, "_run_job", lambda job, *a, **k: seen.append(job.cfg.device) or {"ok": True})
    cfg = tiny_cfg(tiny_model_dir("llama"), "llama", tmp_path / "out")
    with claim_device("auto"):  # another job holds GPU 0
        assert runner.run(cfg) == {"ok": True}
    assert seen == ["cuda:1"]


# The parallel launcher's real two-job sweep is tests/test_report.py::test_a_sweep_of_two_models_writes_the_cross_run_report
# (one sweep serves both, to keep CI short).
