"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# tests/ on sys.path for the test helper modules (tiny_models.py, helpers.py, wandb_records.py), whatever
# pytest's import mode (prepend, importlib). Only for those: the package persona_bench itself is installed
# (pip install -r requirements.txt installs it editable), never found through sys.path.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# The README's test command runs two pytest-xdist workers (-n 2): each worker, and every run.py it starts, gets
# an equal share of the cores it may run on for torch (OMP_NUM_THREADS, read when torch starts), so that two workers do not
# oversubscribe the CPU. A value set by the caller is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

from tiny_models import build_tiny_model  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch had started before this file


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: ``tiny_model_dir(arch, chat_template=None) -> Path``.

    Builds (once per session per ``(arch, chat_template)``) a tiny random model
    and tokenizer with ``tests/tiny_models.build_tiny_model`` and returns the
    directory, loadable offline with the Auto classes. Treat it as read-only:
    it is shared by every test in the session.
    """
    cache: dict[tuple[str, str | None], Path] = {}

    def get(arch: str, chat_template: str | None = None) -> Path:
        key = (arch, chat_template)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{arch}-{chat_template or 'plain'}")
            cache[key] = build_tiny_model(arch, out, chat_template)
        return cache[key]

    return get
