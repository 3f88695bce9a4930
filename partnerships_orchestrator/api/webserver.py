"""Driving runs through the Dagster webserver's GraphQL API: launch, terminate, re-execute from
failure, and reload the code location. Run state stays Dagster's; nothing is copied here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg
import httpx
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME

from partnerships_orchestrator.api.problems import Problem
from partnerships_orchestrator.compiler.naming import LOCATION_NAME, REPOSITORY_NAME
from partnerships_orchestrator.settings import WEBSERVER_ENV

_LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on PresetNotFoundError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
  }
}"""

_REEXECUTE = """
mutation($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
  }
}"""

_TERMINATE = """
mutation($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunSuccess { run { runId status } }
    ... on TerminateRunFailure { message }
    ... on RunNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}"""

_RELOAD = """
mutation($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on RepositoryLocationNotFound { message }
  }
}"""


class Webserver:
    """A small GraphQL client for the product's own Dagster webserver."""

    def __init__(self, url: str | None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/") if url else None
        self.client = httpx.Client(timeout=timeout)

    def _call(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.url:
            raise Problem(
                503,
                "not-ready",
                "the API was started without a Dagster webserver",
                hint=f"start it with `partnerships up`, or set {WEBSERVER_ENV} to the webserver's URL",
            )
        try:
            response = self.client.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables or {}}
            )
            response.raise_for_status()
            payload = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Problem(
                502, "upstream-error", f"the Dagster webserver did not answer: {type(exc).__name__}"
            ) from exc
        if payload.get("errors"):
            raise Problem(
                502, "upstream-error", payload["errors"][0].get("message", "GraphQL error")
            )
        return dict(payload["data"])

    @staticmethod
    def _run_id(result: dict[str, Any]) -> str:
        if result["__typename"] == "LaunchRunSuccess":
            return str(result["run"]["runId"])
        message = result.get("message") or "; ".join(
            e["message"] for e in result.get("errors", []) if "message" in e
        )
        raise Problem(
            409, "conflict", f"Dagster refused the run ({result['__typename']}): {message}"
        )

    def launch(
        self,
        job: str,
        run_config: dict[str, Any],
        tags: dict[str, str],
        assets: Sequence[dg.AssetKey] = (),
    ) -> str:
        """Launch a run of ``job`` (of those ``assets`` only, when given); returns its id."""
        selector: dict[str, Any] = {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": REPOSITORY_NAME,
            "jobName": job,
        }
        if assets:
            selector["assetSelection"] = [{"path": list(key.path)} for key in assets]
        params = {
            "selector": selector,
            "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self._call(_LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] == "PipelineNotFoundError":
            # the webserver has not loaded this playbook yet (e.g. stored by another API
            # process, or still starting): reload the location once and try again
            self.reload()
            result = self._call(_LAUNCH, {"params": params})["launchRun"]
        return self._run_id(result)

    def launch_assets(self, assets: Sequence[dg.AssetKey], tags: dict[str, str]) -> str:
        """Launch a run materializing ``assets`` (Dagster's implicit asset job)."""
        return self.launch(IMPLICIT_ASSET_JOB_NAME, {}, tags, assets)

    def reexecute_from_failure(self, run_id: str, tags: dict[str, str]) -> str:
        params = {
            "parentRunId": run_id,
            "strategy": "FROM_FAILURE",
            "extraTags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        return self._run_id(self._call(_REEXECUTE, {"params": params})["launchRunReexecution"])

    def terminate(self, run_id: str) -> None:
        result = self._call(_TERMINATE, {"runId": run_id})["terminateRun"]
        if result["__typename"] != "TerminateRunSuccess":
            raise Problem(409, "conflict", result.get("message") or result["__typename"])

    def reload(self) -> None:
        """Reload the code location so the UI (and new launches) see changed playbooks."""
        result = self._call(_RELOAD, {"name": LOCATION_NAME})["reloadRepositoryLocation"]
        error = result.get("message") or ((result.get("locationOrLoadError") or {}).get("message"))
        if error:
            raise Problem(502, "upstream-error", f"reloading the code location failed: {error}")

    def alive(self) -> bool:
        if not self.url:
            return False
        try:
            return self.client.get(f"{self.url}/server_info", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False
