"""Wording shared by every check: "did you mean", lists of valid choices, values quoted."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any

MAX_LISTED = 12


def close_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` (difflib), if any is close enough."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def listing(choices: Iterable[str]) -> str:
    """``a``, ``b``, ``c`` (at most a dozen, then an ellipsis)."""
    names = list(choices)
    shown = ", ".join(f"`{name}`" for name in names[:MAX_LISTED])
    return shown + (", ..." if len(names) > MAX_LISTED else "")


def did_you_mean(
    word: str, choices: Iterable[str], label: str, *, always_list: bool = False
) -> str:
    """``did you mean `x`?``, else (or also, with ``always_list``) the valid choices."""
    options = list(choices)
    match = close_match(word, options)
    if not options:
        return f"there are no {label}"
    valid = f"{label}: {listing(options)}"
    if match is None:
        return valid
    return f"did you mean `{match}`? {valid}" if always_list else f"did you mean `{match}`?"


def show(value: Any) -> str:
    """A value quoted for a message, shortened when long."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    except ValueError:  # a recursive structure
        text = f"<{type(value).__name__}>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"`{text}`"
