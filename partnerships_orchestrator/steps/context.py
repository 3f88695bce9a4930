"""What a step runner receives: the step, its expression scope, the run, and the resources."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from partnerships_orchestrator.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from partnerships_orchestrator.connectors.channel import ChannelProvider
    from partnerships_orchestrator.spec.models import Playbook, StepBase
    from partnerships_orchestrator.store.state import StateStore


class _Skipped:
    """What a runner returns to skip its step (e.g. a fan-out item its `filter` rejects)."""

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Any = _Skipped()


@dataclass(frozen=True)
class RunInfo:
    """The run a step belongs to; ``root_id`` is shared by re-executions of the same run."""

    id: str
    root_id: str
    playbook: str
    started_at: datetime

    def as_scope(self) -> dict[str, Any]:
        return {"id": self.id, "playbook": self.playbook, "started_at": self.started_at}


@dataclass
class StepResources:
    """The outside world a step may touch."""

    state: StateStore
    warehouse: Callable[[], Engine]
    channels: Mapping[str, ChannelProvider] = field(default_factory=dict)
    crm: Mapping[str, Any] = field(default_factory=dict)
    webhook_allow_hosts: tuple[str, ...] = ()
    webhook_secret: Callable[[], str] | None = None


@dataclass
class StepContext:
    """Everything a step runner needs; runners are plain Python, testable without Dagster."""

    playbook: Playbook
    step: StepBase
    run: RunInfo
    scope: Mapping[str, Any]
    settings: Settings
    resources: StepResources
    mapping_key: str | None = None
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger("partnerships"))
    deadline: float | None = None  # time.monotonic() deadline from timeout_seconds

    @property
    def step_key(self) -> str:
        """The step id, with the fan-out item's key when the step is mapped."""
        return f"{self.step.id}[{self.mapping_key}]" if self.mapping_key else self.step.id
