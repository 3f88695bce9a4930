"""Dagster names for playbook things. Op names are global in a code location: namespace them."""

from __future__ import annotations

import re

import dagster as dg

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


def fanout_op_name(playbook_id: str, step_id: str) -> str:
    """The op that evaluates a step's `for_each` and emits one dynamic output per item."""
    return f"{op_name(playbook_id, step_id)}__items"


def input_name(step_id: str) -> str:
    return f"after_{safe(step_id)}"


def max_runs_tag(limit: int) -> str:
    return f"{MAX_RUNS_TAG_PREFIX}{limit}"


def invalid_job_name(file_stem: str) -> str:
    return f"invalid__{safe(file_stem)}"
