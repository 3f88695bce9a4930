"""Problems in playbook documents: where they are, what is wrong, and what would fix it.

A :class:`Finding` is a problem found in a parsed document, named by its path only; the loader
turns findings into :class:`SpecProblem` s once it has located them in their file (only files
that have a problem are ever re-parsed with positions).

Paths read like Python / JSONPath: ``steps[2].depends_on[0]``, ``inputs.since_days``,
``headers["X-Api-Key"]`` (keys that are not plain names are quoted). The document root is
``<document>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from partnerships_orchestrator.errors import PartnershipsError

Loc = tuple[str | int, ...]
"""A path inside a document as keys and list indexes, e.g. ``("steps", 2, "depends_on", 0)``."""

Target = Literal["value", "key"]
"""Point at a path's value, or at its key (unknown keys). A missing key points at its parent."""

ROOT = "<document>"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(loc: Loc) -> str:
    """``("steps", 2, "depends_on", 0)`` -> ``steps[2].depends_on[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or ROOT


@dataclass(frozen=True)
class SpecProblem:
    """One problem in one file, located: ``file:line:col: path: message (hint)``."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the API and ``partnerships validate --json`` render it."""
        return asdict(self)

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.line, self.column)


@dataclass(frozen=True)
class Finding:
    """A problem in document ``index`` of ``file`` at ``loc``, not located in the text yet."""

    file: str
    index: int
    loc: Loc
    message: str
    hint: str | None = None
    target: Target = "value"


class SpecError(PartnershipsError):
    """One or more problems in playbook documents; ``str()`` lists them one per line."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in playbook documents")

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)
