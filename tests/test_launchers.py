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
                        "hydra.launcher.timeout_min=10:00:00", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "fake sbatch: nothing submitted" in p.stderr, p.stderr[-2000:]
    text = script.read_text()
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=8", "--mem=64GB",
                 "--partition=gpu", "--account=myproj", "--time=600", "--array=0-1%2", "--job-name=persona_bench",
                 "--signal=USR2@120", "--requeue"):
        assert f"#SBATCH {line}\n" in text, (line, text)
    assert f"--output={tmp_path / 'sweep'}/.submitit/%A_%a/" in text
    assert "submitit.core._submit" in text and "--qos" not in text


# Every form of sbatch --time, from SBATCH_TIMELIMIT and from the command line, in minutes (seconds round up)
TIME_FORMS = [("90", 90), ("30:30", 31), ("24:00:00", 1440), ("2-0", 2880), ("1-12:30", 2190),
              ("1-00:00:01", 1441), ("0-00:45:00", 45)]


@pytest.mark.parametrize("given,minutes", TIME_FORMS)
def test_slurm_time_limit_takes_every_form_of_sbatch_time(no_sbatch_env, monkeypatch, tmp_path, given, minutes):
    from hydra.utils import instantiate

    from persona_bench.run.launch import LaunchCheck

    monkeypatch.setenv("SBATCH_TIMELIMIT", given)
    assert launcher(["hydra/launcher=slurm"])["timeout_min"] == minutes  # resolved: --cfg hydra --resolve shows it
    monkeypatch.delenv("SBATCH_TIMELIMIT")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(None, overrides=["hydra/launcher=slurm", f"hydra.launcher.timeout_min={given}",
                                       f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    LaunchCheck().on_multirun_start(cfg)  # as Hydra runs it, before it makes the launcher
    assert instantiate(cfg.hydra.launcher).params["timeout_min"] == minutes  # what submitit is given


@pytest.mark.parametrize("given,says", [("UNLIMITED", "no time limit"), ("infinite", "no time limit"),
                                        ("0", "no time limit"), ("24h", "not a SLURM time limit"),
                                        ("1:2:3:4", "not a SLURM time limit")])
def test_a_bad_or_unlimited_time_limit_is_one_clear_error_before_any_folder(no_sbatch_env, monkeypatch, tmp_path,
                                                                            capsys, given, says):
    from persona_bench.run.launch import LaunchCheck

    monkeypatch.setenv("SBATCH_TIMELIMIT", given)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(None, overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                      return_hydra_config=True)
    with pytest.raises(SystemExit) as e:  # the -m sweep's callback, before Hydra makes the sweep folder
        LaunchCheck().on_multirun_start(cfg)
    err = capsys.readouterr().err
    assert e.value.code == 2 and not (tmp_path / "sweep").exists()
    hint = "sinfo" if says == "no time limit" else '"days-hours:minutes:seconds"'  # what to give instead
    assert f"error: SBATCH_TIMELIMIT='{given}' " in err and says in err and hint in err, err


def test_slurm_jobs_requeue_on_time_limit_and_preemption_and_rerun_the_same_job(fake_slurm, no_sbatch_env,
                                                                                 monkeypatch, tmp_path):
    """The launcher, in this process, submits a two-job array through a fake sbatch: the script asks for the time,
    the requeue and the USR2 signal; each pickled job may be requeued 3 times at its time limit, and the
    resubmission submitit makes on USR2 (the launcher's checkpoint) is the same call: the same overrides, hence
    the same job folder, where the requeued job resumes from its saved batches (test_resume.py)."""
    import pickle

    from hydra.utils import instantiate

    from persona_bench.run.launch import LaunchCheck

    script = tmp_path / "script.sh"
    monkeypatch.setenv("PATH", f"{fake_slurm}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_OUT", str(script))
    sweep = tmp_path / "sweep"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(None, overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={sweep}",
                                       "hydra.launcher.timeout_min=1-12:00:00"], return_hydra_config=True)
    LaunchCheck().on_multirun_start(cfg)
    slurm = instantiate(cfg.hydra.launcher)
    slurm.setup(hydra_context=None, task_function=print, config=cfg)
    with pytest.raises(Exception, match="fake sbatch: nothing submitted"):
        slurm.launch([["model=flan"], ["model=opt"]], initial_job_idx=0)
    text = script.read_text()
    for line in ("--time=2160", "--requeue", "--signal=USR2@120", "--array=0-1%2", "--open-mode=append"):
        assert f"#SBATCH {line}\n" in text, (line, text)
    jobs = [pickle.loads(p.read_bytes()) for p in sorted((sweep / ".submitit").rglob("*.pkl"))]
    assert len(jobs) == 2
    for job in jobs:
        assert (job._timeout_min, job._timeout_countdown) == (2160, 3)  # max_num_timeout: 3 requeues at the limit
        again = job.function.checkpoint(*job.args, **job.kwargs)  # what submitit pickles and requeues on USR2
        assert again.function is job.function and again.args == job.args
    assert sorted(job.args[0] for job in jobs) == [["model=flan"], ["model=opt"]]


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


def test_the_environment_variable_moves_the_lock_folder(tmp_path, monkeypatch):
    """Containers on one machine share GPU claims when each mounts one host folder and names it here
    (docs/scale.md#docker)."""
    monkeypatch.setenv("PERSONA_BENCH_GPU_LOCKS", str(tmp_path / "locks"))
    with claim_device("auto", holder="job-a", gpus=["GPU-aaaa", "GPU-bbbb"]) as device:
        assert device == "cuda:0"
        assert "job-a" in (tmp_path / "locks" / "gpu-GPU-aaaa.lock").read_text()


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
