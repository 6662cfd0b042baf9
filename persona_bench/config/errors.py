"""Errors a user can fix: entry points print the message alone and exit 2 (config) or 1."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; entry points print its message alone and exit non-zero."""


class ConfigError(UserError, ValueError):
    """A config value that composes but cannot run; the message names the value and the valid ones."""


class Unavailable(UserError, RuntimeError):
    """A model or data source that is neither cached nor reachable."""


def did_you_mean(word: str, options) -> str:
    """' (did you mean X?)' naming the options closest to a misspelt word, or '' when none is close."""
    import difflib

    near = difflib.get_close_matches(str(word), [str(o) for o in options], n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(near)}?)" if near else ""
