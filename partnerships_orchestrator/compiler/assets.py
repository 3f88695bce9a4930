"""`sync`, `dataset`, `metrics` and `report` documents as Dagster assets, checks and schedules.

Each builder wraps a plain runtime function from ``assets/``: the asset reads its resources,
calls it, and turns its result into metadata (row counts, the column schema, a preview, metric
values) and asset check results. A document with a ``schedule`` gets a job of its assets and a
schedule; datasets, metrics and reports without one follow their upstreams
(``AutomationCondition.eager()``).
"""

# no `from __future__ import annotations`: Dagster reads the config annotation at definition time

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.naming import RESOURCE_KEY
from partnerships_orchestrator.spec.models import Check, Dataset, Metrics, Report, Schedule, Sync
from partnerships_orchestrator.spec.validate import asset_upstreams

SYNC_GROUP = "crm"
DATASET_GROUP = "datasets"
WAREHOUSE_GROUP = "warehouse"
AUTOMATION_SENSOR = "partnerships_automation"
AUTOMATION_INTERVAL = 30  # seconds between evaluations by the daemon
REPORT_RETRIES = 2
REPORT_RETRY_DELAY = 1.0  # seconds
PREVIEW_ROWS = 10


class SyncConfig(dg.Config):
    """Launchpad config of a sync asset."""

    full_refresh: bool = False


@dataclass
class AssetBundle:
    """What the asset documents compile to."""

    assets: list[Any] = field(default_factory=list)  # AssetsDefinition or AssetSpec
    jobs: list[Any] = field(default_factory=list)
    schedules: list[dg.ScheduleDefinition] = field(default_factory=list)
    sensors: list[dg.SensorDefinition] = field(default_factory=list)

    def add(self, other: "AssetBundle") -> None:
        self.assets += other.assets
        self.jobs += other.jobs
        self.schedules += other.schedules
        self.sensors += other.sensors

    def definitions(self, resources: Mapping[str, Any]) -> dg.Definitions:
        return dg.Definitions(
            assets=self.assets,
            jobs=self.jobs,
            schedules=self.schedules,
            sensors=self.sensors,
            resources=resources,
        )


def scheduled(
    document_id: str, keys: Sequence[dg.AssetKey], schedule: Schedule | None, what: str
) -> AssetBundle:
    """A job of ``keys`` and its schedule, when the document has one."""
    if schedule is None:
        return AssetBundle()
    job = dg.define_asset_job(
        naming.asset_job_name(document_id),
        selection=list(keys),
        description=f"Materializes `{document_id}` ({what})",
        tags={naming.SOURCE_TAG: document_id},
    )
    return AssetBundle(
        jobs=[job],
        schedules=[
            dg.ScheduleDefinition(
                name=f"{naming.asset_job_name(document_id)}__schedule",
                job=job,
                cron_schedule=schedule.cron,
                execution_timezone=schedule.timezone,
                description=f"`{document_id}` at `{schedule.cron}` ({schedule.timezone})",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        ],
    )


# ---------------------------------------------------------------- table metadata


def column_schema(engine: sa.Engine, table: str) -> dg.TableSchema:
    """The table's columns as Dagster's table schema (``dagster/column_schema``)."""
    columns = sa.inspect(engine).get_columns(table)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c["name"],
                str(c["type"]).lower(),
                constraints=dg.TableColumnConstraints(nullable=bool(c.get("nullable", True))),
            )
            for c in columns
        ]
    )


def preview(engine: sa.Engine, table: str, limit: int = PREVIEW_ROWS) -> str:
    """The first rows as a Markdown table (long values shortened)."""
    with engine.connect() as conn:
        result = conn.execute(sa.text(f'SELECT * FROM "{table}" LIMIT {int(limit)}'))  # nosec B608 # a document's table id (validated identifier), quoted; limit an int
        names = list(result.keys())
        rows = [list(r) for r in result]
    shown = [n for n in names if n != "raw"]
    index = [names.index(n) for n in shown]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = [_cell(row[i]) for i in index]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def row_count(engine: sa.Engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}" {where}')).scalar_one())  # nosec B608 # a document's table id (validated identifier), quoted; fixed filter


# ---------------------------------------------------------------- syncs


def sync_assets(sync: Sync, connected: bool) -> AssetBundle:
    """One asset per object of a sync document; it reads the provider's connection when one is
    configured (``connected``), else the sandbox demo CRM."""
    bundle = AssetBundle(assets=[_sync_asset(sync, obj, connected) for obj in sync.objects])
    keys = [naming.asset_key(a) for a in sync.asset_ids()]
    bundle.add(scheduled(sync.id, keys, sync.schedule, f"{sync.provider} sync"))
    return bundle


def _sync_asset(sync: Sync, object_name: str, connected: bool) -> dg.AssetsDefinition:
    from partnerships_orchestrator.assets.crm_schema import crm_object

    asset_id = f"{sync.id}_{object_name}"
    key = naming.asset_key(asset_id)
    table = naming.asset_name(asset_id)
    obj = crm_object(sync.provider, object_name)
    listed = sync.properties.get(object_name)
    required = {RESOURCE_KEY, sync.provider} if connected else {RESOURCE_KEY}
    source_label = (
        f"the `{sync.provider}` connection" if connected else "the sandbox demo CRM (no connection)"
    )
    checks = [
        dg.AssetCheckSpec("unique_id", asset=key, description="No two rows share an `id`."),
        dg.AssetCheckSpec(
            "required_columns",
            asset=key,
            description="Every column of the documented mapping is present.",
        ),
    ]

    @dg.asset(
        key=key,
        group_name=SYNC_GROUP,
        kinds={sync.provider, "table"},
        description=(sync.description or f"{sync.provider} {object_name}")
        + f"\n\nLanded from {source_label} into the warehouse table `{table}`"
        + (" incrementally." if sync.incremental else " in full each run."),
        required_resource_keys=required,
        check_specs=checks,
        tags={k: v for k, v in sync.tags.items()},
        owners=[f"team:{o}" for o in sync.owners] or None,
        metadata={"document": sync.id, "table": table, "provider": sync.provider},
    )
    def _sync(context: dg.AssetExecutionContext, config: SyncConfig) -> dg.MaterializeResult:
        from partnerships_orchestrator.assets.sync import run_sync

        engine = context.resources.partnerships.warehouse()
        source = _crm_source(sync.provider, context.resources, connected)
        full = config.full_refresh or not sync.incremental
        context.log.info(
            f"{asset_id}: reading {object_name} from {source.label}"
            + (" (full refresh)" if full else " (incremental)")
        )
        if source.sandbox:
            context.log.warning(
                f"{asset_id}: no `{sync.provider}` connection is configured; reading the "
                "sandbox demo CRM (add one to a `kind: connections` document to sync the vendor)"
            )

        def progress(asset: str, seen: int, written: int) -> None:
            context.log.info(f"{asset}: {seen:,} records read, {written:,} rows written")

        result = run_sync(engine, source, obj, table, listed, full_refresh=full, progress=progress)
        return dg.MaterializeResult(
            metadata=_sync_metadata(engine, table, result),
            check_results=_sync_checks(engine, table, [c for c, _ in result.columns]),
        )

    return _sync


def _crm_source(provider: str, resources: Any, connected: bool) -> Any:
    from partnerships_orchestrator.assets.crm_source import HubSpotSource, SalesforceSource
    from partnerships_orchestrator.assets.demo_crm import DemoCRM

    if not connected:
        return DemoCRM(provider)
    crm = getattr(resources, provider)
    return HubSpotSource(crm) if provider == "hubspot" else SalesforceSource(crm)


def _sync_metadata(engine: sa.Engine, table: str, result: Any) -> dict[str, Any]:
    return {
        "dagster/row_count": row_count(engine, table),
        "dagster/column_schema": column_schema(engine, table),
        "rows_live": row_count(engine, table, "WHERE NOT is_deleted"),
        "records_seen": result.seen,
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_deleted": result.deleted,
        "cursor": result.cursor or "",
        "duration_seconds": round(result.duration_seconds, 3),
        "source": result.source,
        "sandbox": result.sandbox,
        "full_refresh": result.full_refresh,
        "preview": dg.MetadataValue.md(preview(engine, table)),
    }


def _sync_checks(engine: sa.Engine, table: str, expected: list[str]) -> list[dg.AssetCheckResult]:
    with engine.connect() as conn:
        dupes = conn.execute(
            sa.text(f'SELECT count(*) - count(DISTINCT id) FROM "{table}"')  # nosec B608 # a document's table id (validated identifier), quoted
        ).scalar_one()
    present = {c["name"] for c in sa.inspect(engine).get_columns(table)}
    missing = [c for c in expected if c not in present]
    return [
        dg.AssetCheckResult(
            check_name="unique_id",
            passed=dupes == 0,
            metadata={"duplicate_ids": int(dupes)},
            description=None if dupes == 0 else f"{dupes} rows share an id with another row",
        ),
        dg.AssetCheckResult(
            check_name="required_columns",
            passed=not missing,
            metadata={"missing": ", ".join(missing) or "none"},
            description=f"missing columns: {', '.join(missing)}" if missing else None,
        ),
    ]


# ---------------------------------------------------------------- datasets


def automation(schedule: Schedule | None) -> dg.AutomationCondition | None:
    """Follow the upstreams (eager) unless the document has its own schedule. Warehouse tables
    that no asset makes are never materialized: they do not hold an update back."""
    if schedule is not None:
        return None
    return dg.AutomationCondition.eager().ignore(dg.AssetSelection.groups(WAREHOUSE_GROUP))


def upstream_keys(model: Dataset | Metrics | Report) -> list[dg.AssetKey]:
    """Keys of what the document reads: assets of the folder and warehouse tables."""
    return [naming.asset_key(name) for name in asset_upstreams(model)]


def dataset_assets(dataset: Dataset) -> AssetBundle:
    from partnerships_orchestrator.assets.checks import check_names

    key = naming.asset_key(dataset.id)
    table = naming.asset_name(dataset.id)
    names = check_names(dataset.checks)
    specs = [
        dg.AssetCheckSpec(
            name,
            asset=key,
            description=_check_description(check),
            blocking=check.blocking,
        )
        for name, check in zip(names, dataset.checks, strict=True)
    ]

    @dg.asset(
        key=key,
        deps=upstream_keys(dataset),
        group_name=DATASET_GROUP,
        kinds={"sql", "table"},
        description=(dataset.description or dataset.name or dataset.id)
        + f"\n\nWarehouse table `{table}`, rebuilt from:\n\n```sql\n{dataset.sql.strip()}\n```",
        required_resource_keys={RESOURCE_KEY},
        check_specs=specs,
        automation_condition=automation(dataset.schedule),
        tags=dict(dataset.tags),
        owners=[f"team:{o}" for o in dataset.owners] or None,
        metadata={"document": dataset.id, "table": table},
    )
    def _dataset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from partnerships_orchestrator.assets.checks import run_check
        from partnerships_orchestrator.assets.dataset import build_table

        engine = context.resources.partnerships.warehouse()
        built = build_table(engine, table, dataset.sql, dataset.id)
        context.log.info(f"{dataset.id}: {built.rows:,} rows into `{table}`")
        results = []
        for name, check in zip(names, dataset.checks, strict=True):
            outcome = run_check(engine, table, built.columns, check)
            results.append(
                dg.AssetCheckResult(
                    check_name=name,
                    passed=outcome.passed,
                    severity=_severity(check.severity),
                    description=outcome.description,
                    metadata=outcome.metadata,
                )
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": built.rows,
                "dagster/column_schema": column_schema(engine, table),
                "duration_seconds": round(built.duration_seconds, 3),
                "preview": dg.MetadataValue.md(preview(engine, table)),
            },
            check_results=results,
        )

    bundle = AssetBundle(assets=[_dataset])
    bundle.add(scheduled(dataset.id, [key], dataset.schedule, "dataset"))
    return bundle


def _severity(severity: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if severity == "warn" else dg.AssetCheckSeverity.ERROR


def _check_description(check: Check) -> str:
    if check.type == "unique":
        return f"`{check.column}` is unique"
    if check.type == "not_null":
        return f"`{check.column}` is never null"
    if check.type == "accepted_values":
        return f"`{check.column}` is one of {', '.join(map(str, check.values or []))}"
    if check.type == "row_count":
        return f"row count between {check.min or 0} and {check.max or 'any'}"
    return f"newest `{check.column}` at most {check.max_age_hours:g} h old"


# ---------------------------------------------------------------- metrics


def metrics_assets(metrics: Metrics) -> AssetBundle:
    key = naming.asset_key(metrics.id)
    specs: list[dg.AssetCheckSpec] = []
    for metric in metrics.metrics:
        if metric.target is not None:
            specs.append(
                dg.AssetCheckSpec(
                    f"{metric.id}_target",
                    asset=key,
                    description=f"`{metric.id}` reaches its target {metric.target:g} (warns)",
                )
            )
        if metric.thresholds is not None:
            specs.append(
                dg.AssetCheckSpec(
                    f"{metric.id}_thresholds",
                    asset=key,
                    description=f"`{metric.id}` within its warning / error thresholds",
                )
            )

    @dg.asset(
        key=key,
        deps=upstream_keys(metrics),
        group_name="metrics",
        kinds={"sql"},
        description=(metrics.description or metrics.name or metrics.id)
        + "\n\n"
        + "\n".join(f"- `{m.id}`: {m.description or m.sql}" for m in metrics.metrics),
        required_resource_keys={RESOURCE_KEY},
        check_specs=specs,
        automation_condition=automation(metrics.schedule),
        tags=dict(metrics.tags),
        owners=[f"team:{o}" for o in metrics.owners] or None,
        metadata={"document": metrics.id},
    )
    def _metrics(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from partnerships_orchestrator.assets.metrics import compute, judge

        engine = context.resources.partnerships.warehouse()
        values = compute(engine, metrics, context.run_id)
        metadata: dict[str, Any] = {}
        results: list[dg.AssetCheckResult] = []
        for metric, value in zip(metrics.metrics, values, strict=True):
            metadata[metric.id] = (
                dg.MetadataValue.float(value.value)
                if value.value is not None
                else dg.MetadataValue.null()
            )
            context.log.info(f"{metrics.id}.{metric.id} = {value.value}")
            for verdict in judge(metric, value.value):
                results.append(
                    dg.AssetCheckResult(
                        check_name=f"{metric.id}_{verdict.check}",
                        passed=verdict.passed,
                        severity=_severity(verdict.severity),
                        description=verdict.description,
                        metadata={"value": value.value if value.value is not None else "none"},
                    )
                )
        return dg.MaterializeResult(metadata=metadata, check_results=results)

    bundle = AssetBundle(assets=[_metrics])
    bundle.add(scheduled(metrics.id, [key], metrics.schedule, "metrics"))
    return bundle


# ---------------------------------------------------------------- reports


def report_assets(report: Report, metric_sets: set[str]) -> AssetBundle:
    """A report asset; ``metric_sets`` names the metrics documents (their values, not rows)."""
    key = naming.asset_key(report.id)
    channels = {d.channel for d in report.deliver}

    @dg.asset(
        key=key,
        deps=upstream_keys(report),
        group_name="reports",
        kinds={"pdf"} if "pdf" in report.formats else {"markdown"},
        description=(report.description or report.name or report.id)
        + f"\n\nRendered from `templates/{report.template}` as {', '.join(report.formats)}"
        + (
            "; delivered to " + ", ".join(f"{d.channel} {d.to}" for d in report.deliver)
            if report.deliver
            else ""
        ),
        required_resource_keys={RESOURCE_KEY, *channels},
        automation_condition=automation(report.schedule),
        # a delivery that failed is tried again; the ledger keeps the sent ones from repeating
        retry_policy=dg.RetryPolicy(max_retries=REPORT_RETRIES, delay=REPORT_RETRY_DELAY),
        tags=dict(report.tags),
        owners=[f"team:{o}" for o in report.owners] or None,
        metadata={"document": report.id, "template": report.template},
    )
    def _report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from partnerships_orchestrator.assets import report as rendering
        from partnerships_orchestrator.assets.report_delivery import deliver_report

        resource = context.resources.partnerships
        engine = resource.warehouse()
        data: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        for ref in report.data:
            name = naming.asset_name(ref)
            if name in metric_sets:
                metrics[ref] = metrics[name] = rendering.latest_metrics(engine, ref)
            else:
                data[ref] = data[name] = rendering.load_data(engine, name)
        out_dir = resource.settings.artifacts_dir / "reports" / report.id / context.run_id
        rendered = rendering.render_report(
            report, resource.settings.templates_dir, out_dir, data, metrics
        )
        context.log.info(
            f"{report.id}: wrote {', '.join(str(p) for p in rendered.files.values())}"
            + (f" ({rendered.pages} pages)" if rendered.pages else "")
        )
        receipts = deliver_report(
            report,
            rendered,
            resources=context.resources,
            state=resource.state,
            run_id=context.run_id,
            root_run_id=context.run.root_run_id or context.run_id,
            log=context.log,
        )
        metadata: dict[str, Any] = {
            f"path_{fmt}": dg.MetadataValue.path(str(path)) for fmt, path in rendered.files.items()
        }
        if rendered.pages is not None:
            metadata["pages"] = rendered.pages
        metadata["preview"] = dg.MetadataValue.md(rendering.preview(rendered.markdown))
        metadata["deliveries"] = dg.MetadataValue.json(receipts)
        return dg.MaterializeResult(metadata=metadata)

    bundle = AssetBundle(assets=[_report])
    bundle.add(scheduled(report.id, [key], report.schedule, "report"))
    return bundle


def warehouse_specs(documents: Sequence[Any], own: set[str]) -> list[dg.AssetSpec]:
    """Warehouse tables that datasets read but no asset makes, shown as their sources."""
    read = {
        name
        for doc in documents
        if isinstance(doc, Dataset | Metrics | Report)
        for name in asset_upstreams(doc)
    }
    return [
        dg.AssetSpec(
            naming.asset_key(name),
            group_name=WAREHOUSE_GROUP,
            kinds={"table"},
            description=f"Warehouse table `{name}` (not made by a playbook document).",
        )
        for name in sorted(read - own)
    ]


# ---------------------------------------------------------------- the whole folder


def asset_bundle(documents: Sequence[Any], resources: Mapping[str, Any]) -> AssetBundle:
    """Every asset document of a folder compiled; a sync reads its vendor when ``resources``
    has that connection."""
    bundle = AssetBundle()
    own = own_asset_names(documents)
    for doc in documents:
        if isinstance(doc, Sync):
            bundle.add(sync_assets(doc, connected=doc.provider in resources))
        elif isinstance(doc, Dataset):
            bundle.add(dataset_assets(doc))
        elif isinstance(doc, Metrics):
            bundle.add(metrics_assets(doc))
        elif isinstance(doc, Report):
            metric_sets = {naming.asset_name(d.id) for d in documents if isinstance(d, Metrics)}
            bundle.add(report_assets(doc, metric_sets))
    if any(isinstance(doc, Dataset | Metrics | Report) for doc in documents):
        bundle.assets += warehouse_specs(documents, own)
    followers = [
        naming.asset_key(doc.id)
        for doc in documents
        if isinstance(doc, Dataset | Metrics | Report) and doc.schedule is None
    ]
    if followers:
        bundle.sensors.append(automation_sensor(followers))
    return bundle


def automation_sensor(keys: Sequence[dg.AssetKey]) -> dg.SensorDefinition:
    """The daemon's evaluation of the assets that follow their upstreams. Dagster's own default
    automation sensor starts stopped; this one runs from the start, so a dataset refreshes after
    its sync without anyone switching automation on."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.assets(*keys),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=AUTOMATION_INTERVAL,
        description="Materializes datasets, metrics and reports without a schedule after "
        "their upstream assets update (AutomationCondition.eager).",
    )


def own_asset_names(documents: Sequence[Any]) -> set[str]:
    """Dagster names of the assets the documents make."""
    names: set[str] = set()
    for doc in documents:
        if isinstance(doc, Sync):
            names.update(naming.asset_name(a) for a in doc.asset_ids())
        elif isinstance(doc, Dataset | Metrics | Report):
            names.add(naming.asset_name(doc.id))
    return names


def asset_repository_data(
    documents: Sequence[Any], resources: Mapping[str, Any]
) -> dg.RepositoryData | None:
    """The assets, their jobs and schedules as the lazy repository's ``base`` (None if none)."""
    bundle = asset_bundle(documents, resources)
    if not bundle.assets:
        return None
    repository = bundle.definitions(resources).get_repository_def()
    return repository._repository_data  # the RepositoryData behind Definitions (no public getter)
