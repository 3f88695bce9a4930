"""Step runtimes, one module per step type, each exposing ``run(step, ctx) -> output``."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

Runner = Callable[[Any, Any], Any]


def runner_for(step_type: str) -> Runner:
    """The ``run`` function of a step type (imported on first use: runs pay only for what they use)."""
    module = import_module(f"partnerships_orchestrator.steps.{step_type}")
    return module.run  # type: ignore[no-any-return]
