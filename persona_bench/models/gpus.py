"""One GPU per job when several jobs share a machine.

    with claim_device(cfg.device, holder=cfg.output_dir) as device:   # "auto" -> "cuda:1"
        ...                                                           # the job runs on `device`

A sweep launched with several parallel workers (hydra/launcher=parallel) starts its jobs as
separate processes on one machine; with `device=auto` (or `cuda`) every one of them would load
its model onto GPU 0. When torch sees more than one CUDA GPU, `claim_device` gives the job the
first GPU that no other persona-bench job on this machine holds: it takes a non-blocking
`flock` on one lock file per GPU, holds it while the job runs and releases it at the end (the
kernel releases it too if the process dies, so a crashed job never keeps a GPU). Lock files are
named by the GPU's UUID, so processes that see the GPUs under different CUDA_VISIBLE_DEVICES
numberings still cannot take the same GPU.

When every GPU is held, the job waits and polls, logging which jobs hold which GPUs: a sweep
with more jobs than GPUs (n_jobs > GPUs, or a second sweep started beside the first) then runs
them as GPUs free up, instead of failing jobs that would have run minutes later. Interrupting a
waiting job (Ctrl-C, SIGTERM) stops the wait.

Nothing is claimed, and the device is returned unchanged, for `cpu`, an explicit `cuda:N` (the
user chose), or a machine with fewer than two visible GPUs (one GPU per SLURM job, for example).

Lock directory: $PERSONA_BENCH_GPU_LOCKS, else /tmp/persona_bench-gpus-<uid> (so jobs of other
users are not seen; point PERSONA_BENCH_GPU_LOCKS of every user at one shared directory to
coordinate across users). GPUs used by programs other than persona-bench are not seen either.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "PERSONA_BENCH_GPU_LOCKS"
CLAIMING = ("auto", "cuda")   # device values that leave the choice of GPU to us
_last_index: Optional[int] = None  # the GPU this process claimed last: tried first next time


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or f"/tmp/persona_bench-gpus-{os.getuid()}")


def visible_gpus() -> list[str]:
    """A stable name per CUDA GPU torch sees, in torch's index order: its UUID where torch gives
    one, else its index (which is only unique among processes with the same CUDA_VISIBLE_DEVICES)."""
    import torch

    if not torch.cuda.is_available():
        return []
    names = []
    for i in range(torch.cuda.device_count()):
        uuid = str(getattr(torch.cuda.get_device_properties(i), "uuid", "") or "")
        names.append(f"uuid-{uuid}" if uuid else f"index-{i}")
    return names


def _lock_path(lock_dir: Path, gpu: str) -> Path:
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', gpu)}.lock"


def _try_lock(path: Path) -> Optional[int]:
    """An fd holding an exclusive flock on `path`, or None when another open file holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # a shared lock dir, file made by another user: flock needs no write access
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def _acquire(gpus: Sequence[str], lock_dir: Path, holder: str, poll_s: float,
             log_every_s: float) -> tuple[int, int]:
    order = sorted(range(len(gpus)), key=lambda i: (i != _last_index, i))
    waited_since = last_log = None
    while True:
        for i in order:
            fd = _try_lock(_lock_path(lock_dir, gpus[i]))
            if fd is not None:
                if waited_since is not None:
                    log.info("GPU %d is free after waiting %.0f s", i, time.monotonic() - waited_since)
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}: {holder}\n".encode())
                except OSError:
                    pass  # the holder note is for people reading the logs; the lock is what counts
                return i, fd
        now = time.monotonic()
        if waited_since is None:
            waited_since = now
        if last_log is None or now - last_log >= log_every_s:
            last_log = now
            held = "; ".join(f"GPU {i} ({gpus[i]}): {_holder(_lock_path(lock_dir, gpus[i]))}" for i in range(len(gpus)))
            log.info("all %d GPUs are held by other persona-bench jobs, waiting for one to be free (locks in %s; "
                     "device=cuda:N skips this): %s", len(gpus), lock_dir, held)
        time.sleep(poll_s)


@contextmanager
def claim_device(device: str, holder: str = "", *, gpus: Optional[Sequence[str]] = None,
                 lock_dir: Optional[Path] = None, poll_s: float = 5.0, log_every_s: float = 600.0) -> Iterator[str]:
    """Yield the device this job should use, holding its GPU for the duration of the block.

    device: the configured device; only `auto` and `cuda` on a machine with two or more GPUs
        claim one (-> "cuda:<i>"); anything else is yielded unchanged.
    holder: a note written into the lock file (e.g. the job's output directory) for the logs of
        jobs that wait.
    gpus, lock_dir: the GPUs' names in torch index order (default: visible_gpus(), and the claimed
        GPU becomes torch's current device) and the lock directory (default: default_lock_dir());
        tests pass fake ones.
    """
    global _last_index
    if device not in CLAIMING:
        yield device
        return
    real = gpus is None  # not fake names from a test: make the claimed GPU torch's current device
    gpus = visible_gpus() if real else list(gpus)
    if len(gpus) < 2:
        yield device
        return
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        index, fd = _acquire(gpus, lock_dir, holder, poll_s, log_every_s)
    except OSError as e:
        from persona_bench.config.errors import (
            ConfigError,  # imported here: claiming needs nothing but the standard library
        )

        raise ConfigError(f"cannot use the GPU lock directory {lock_dir} ({e.strerror or e}); set {LOCK_DIR_ENV} to "
                          "a writable directory, or give each job its GPU with device=cuda:N") from None
    _last_index = index
    try:
        if real:
            _make_current(index)
        log.info("this job runs on GPU %d of %d (%s); lock %s", index, len(gpus), gpus[index],
                 _lock_path(lock_dir, gpus[index]))
        yield f"cuda:{index}"
    finally:
        os.close(fd)  # releases the flock


def _make_current(index: int) -> None:
    """Make the claimed GPU torch's current device, so calls without a device (bf16 support,
    synchronize, empty_cache) do not open a context on GPU 0."""
    import torch

    if torch.cuda.is_available() and index < torch.cuda.device_count():
        torch.cuda.set_device(index)
