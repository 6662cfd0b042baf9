"""Secrets kept out of everything persona-bench logs, writes or sends: environment values whose names look
secret (HF_TOKEN, WANDB_API_KEY, ...) wherever they occur, and the values of secret-named keys.

    redact(obj)                    # summary.json, the W&B config, run metadata
    with redacted_argv(): ...      # wandb records sys.argv while a run starts
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

REDACTED = "<redacted>"
SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "credential", "credentials")
MIN_SECRET_LEN = 8  # environment values shorter than this ("1", "true", "main") are not treated as secrets


def secret_name(name: str) -> bool:
    """True for names like HF_TOKEN, WANDB_API_KEY, apiKey, db_password; False for batch_tokens, tokenizer."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower())
    return any(w.endswith(SECRET_WORDS) for w in words if w)


def secret_values(environ=None) -> list[str]:
    """Values of secret-looking environment variables, longest first."""
    env = os.environ if environ is None else environ
    vals = {v for k, v in env.items() if secret_name(k) and isinstance(v, str) and len(v) >= MIN_SECRET_LEN}
    return sorted(vals, key=len, reverse=True)


def redact(obj, environ=None):
    """A copy of `obj` (nested dicts, lists, tuples) with secrets replaced by "<redacted>": every
    occurrence of a secret-looking environment variable's value inside a string, and the string
    value of any key whose name looks secret (hf_token, api_key, password)."""
    values = secret_values(environ)

    def walk(x, key=None):
        if isinstance(x, dict):
            return {k: walk(v, k) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(walk(v) for v in x)
        if isinstance(x, str):
            if key is not None and x and secret_name(key):
                return REDACTED
            for s in values:
                x = x.replace(s, REDACTED)
        return x

    return walk(obj)


@contextlib.contextmanager
def redacted_argv():
    """wandb records sys.argv in the run's metadata: hide secret values in it while the run starts."""
    saved = sys.argv
    sys.argv = redact(list(saved))
    try:
        yield
    finally:
        sys.argv = saved
