"""Step stdout/stderr captured to files for the Dagster UI, without mirror processes.

Dagster's `LocalComputeLogManager` copies each step's output back to the terminal with a
`tail -F` child (plus a Python watcher) per stream and per step, and stops them with SIGTERM.
Dagster's own interrupt handling maps SIGTERM to whatever SIGINT does; in a process started
with SIGINT ignored (`cmd &` in a script, nohup, cron, CI) that makes SIGTERM ignored too, the
`tail` children inherit that, ignore the SIGTERM, and each step then waits 30 s per stream for
them and leaves them orphaned. The product shows progress itself, so the mirror is not needed:
this manager keeps the captured files (the UI reads them the same way) and starts no process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import Field, Float, StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file


class FileComputeLogManager(LocalComputeLogManager):
    """Captures step output to `<DAGSTER_HOME>/storage` (or `base_dir`); no `tail` children."""

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {
            "base_dir": Field(StringSource, is_required=False),
            "polling_timeout": Field(Float, is_required=False),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> FileComputeLogManager:
        return cls(inst_data=inst_data, **{"base_dir": "", **dict(config_value)})

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        if not self._base_dir:  # Dagster's own default place for captured logs
            self._base_dir = os.path.join(instance.root_directory, "storage")

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(out)
        ensure_file(err)
        with redirect_to_file(sys.stdout, out), redirect_to_file(sys.stderr, err):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # marks the capture complete
