"""The Dagster code location of Partnerships Orchestrator."""

from partnerships_orchestrator.compiler.location import build_repository

defs = build_repository()
