"""Partnerships Orchestrator: playbooks as code for partner-relationship teams, on Dagster."""
