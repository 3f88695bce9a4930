"""Dagster names for playbook things. Op names are global in a code location: namespace them."""

from __future__ import annotations

import re

import dagster as dg

LOCATION_NAME = "partnerships"  # the code location, as workspace.yaml names it
REPOSITORY_NAME = "partnerships"  # its one repository
RESOURCE_KEY = "partnerships"  # the resource every playbook step and asset uses (state, warehouse)

PLAYBOOK_TAG = "partnerships/playbook"
OWNERS_TAG = "partnerships/owners"
TRIGGER_TAG = "partnerships/trigger"
ABORT_TAG = "partnerships/aborted_by"
SOURCE_TAG = "partnerships/source"
MAX_RUNS_TAG_PREFIX = "partnerships/max_runs_"
SKIP_MARKER = "[skipped]"

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def safe(name: str) -> str:
    """A Dagster-safe identifier: letters, digits and underscores."""
    return _UNSAFE.sub("_", name)


def asset_name(asset_id: str) -> str:
    """The Dagster (and warehouse table) name of an asset id: `-` as `_`."""
    return safe(asset_id)


def asset_key(asset_id: str) -> dg.AssetKey:
    """The one asset key for a sync object, dataset, metrics set or report id (and for every
    reference to one: dataset triggers, report data, dataset lineage)."""
    return dg.AssetKey(asset_name(asset_id))


def asset_job_name(document_id: str) -> str:
    """The job that materializes a document's assets (its schedule runs it)."""
    return f"{safe(document_id)}__assets"


def job_name(playbook_id: str) -> str:
    """The job a playbook compiles to: its id with `-` as `_` (Dagster names allow no `-`)."""
    return safe(playbook_id)


def op_name(playbook_id: str, step_id: str) -> str:
    return f"{safe(playbook_id)}__{safe(step_id)}"


def node_name(step_id: str) -> str:
    """A step's node in its job's graph (what the Dagster UI shows): the step id itself."""
    return safe(step_id)


def region_op_name(playbook_id: str, step_id: str) -> str:
    """The op that runs a `for_each` step and the steps mapped under it, for every item."""
    return f"{op_name(playbook_id, step_id)}__each"


REGION_SCOPE_OUTPUT = "fanout"  # the fan-out's own scope, for the collect step


def region_output_name(step_id: str) -> str:
    """The region op's output holding one step's per-item scopes."""
    return f"step_{safe(step_id)}"


def input_name(step_id: str) -> str:
    return f"after_{safe(step_id)}"


def max_runs_tag(limit: int) -> str:
    return f"{MAX_RUNS_TAG_PREFIX}{limit}"


INVALID_JOB_PREFIX = "invalid__"


def invalid_job_name(file_stem: str) -> str:
    return f"{INVALID_JOB_PREFIX}{safe(file_stem)}"


def is_invalid_job(job_name: str) -> bool:
    """Whether a job stands for a document that did not validate."""
    return job_name.startswith(INVALID_JOB_PREFIX)
