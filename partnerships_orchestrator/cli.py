"""The `partnerships` command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.settings import Settings, load_settings
from partnerships_orchestrator.store.jsonable import jsonable

if TYPE_CHECKING:
    from partnerships_orchestrator.project import Project
    from partnerships_orchestrator.run_local import ProgressEvent, RunSummary


def _console(stderr: bool = False) -> Console:
    """Rich output; wide when piped so tables and summaries are not folded at 80 columns."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=200)


console = _console()
errors = _console(stderr=True)


def _settings(ctx: click.Context) -> Settings:
    opts = ctx.find_root().params
    return load_settings(
        playbooks_dir=ctx.params.get("playbooks") or opts.get("playbooks"),
        home=ctx.params.get("home") or opts.get("home"),
    )


def _project(ctx: click.Context) -> Project:
    # imported here: it loads Dagster (~1.3 s), which `token` and `schema` never need
    from partnerships_orchestrator.project import Project

    return Project(_settings(ctx))


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--playbooks` and `--home` on every command (also accepted before the command name)."""
    fn = click.option(
        "--home",
        type=click.Path(file_okay=False),
        default=None,
        help="Local state folder [env PARTNERSHIPS_HOME; default ./.partnerships].",
    )(fn)
    fn = click.option(
        "--playbooks",
        type=click.Path(file_okay=False),
        default=None,
        help="Playbooks folder [env PARTNERSHIPS_PLAYBOOKS; default ./playbooks].",
    )(fn)
    return fn


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2))


def _fail(exc: PartnershipsError) -> None:
    errors.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="partnerships-orchestrator")
def main(playbooks: str | None, home: str | None) -> None:
    """Partnerships Orchestrator: playbooks as code for partner-relationship teams, on Dagster."""


# ---------------------------------------------------------------- language


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@common_options
@json_option
@click.pass_context
def validate(
    ctx: click.Context, paths: Sequence[str], playbooks: str | None, home: str | None, as_json: bool
) -> None:
    """Check every document (in the playbooks folder, or PATHS); exit 1 on any problem."""
    from partnerships_orchestrator.spec.loader import load_catalog

    settings = _settings(ctx)
    targets = [Path(p) for p in paths] or [settings.playbooks_dir]
    catalog = load_catalog(targets, templates_dir=settings.templates_dir, check_expressions=True)
    if as_json:
        _print_json(
            {
                "documents": len(catalog.documents),
                "problems": [p.as_dict() for p in catalog.problems],
            }
        )
    else:
        for problem in catalog.problems:
            click.echo(str(problem))
        files = len({d.file for d in catalog.documents} | set(catalog.invalid_files))
        verdict = f"{len(catalog.problems)} problem(s)" if catalog.problems else "all valid"
        errors.print(
            f"{len(catalog.documents)} document(s) in {files} file(s): {verdict}", highlight=False
        )
    sys.exit(1 if catalog.problems else 0)


@main.command(name="list")
@common_options
@json_option
@click.pass_context
def list_(ctx: click.Context, playbooks: str | None, home: str | None, as_json: bool) -> None:
    """List the documents in the playbooks folder."""
    project = _project(ctx)
    settings, catalog = project.settings, project.strict_catalog()
    rows = [_document_row(d.model, d.file, settings) for d in catalog.documents]
    invalid = [
        {"file": _rel(f, settings), "problems": len(p)} for f, p in catalog.invalid_files.items()
    ]
    if as_json:
        _print_json({"documents": rows, "invalid_files": invalid})
        return
    table = Table("id", "kind", "name", "triggers", "steps", "assets", "owners", "file")
    for row in rows:
        table.add_row(
            row["id"],
            row["kind"],
            row["name"] or "",
            ", ".join(row["triggers"]),
            str(row["steps"] if row["steps"] is not None else ""),
            ", ".join(row["assets"]),
            ", ".join(row["owners"]),
            row["file"],
        )
    console.print(table)
    for item in invalid:
        errors.print(
            f"[red]invalid:[/] {item['file']} ({item['problems']} problem(s); "
            "run `partnerships validate`)"
        )


def _rel(path: str, settings: Settings) -> str:
    try:
        return str(Path(path).resolve().relative_to(settings.playbooks_dir.parent))
    except ValueError:
        return path


def _document_row(model: Any, file: str, settings: Settings) -> dict[str, Any]:
    triggers = [t.type for t in getattr(model, "triggers", [])]
    steps = getattr(model, "steps", None)
    return {
        "id": model.id,
        "kind": model.kind,
        "name": model.name,
        "description": model.description,
        "triggers": triggers or (["manual"] if model.kind == "playbook" else []),
        "steps": len(steps) if steps is not None else None,
        "assets": _assets_of(model),
        "owners": model.owners,
        "file": _rel(file, settings),
    }


def _assets_of(model: Any) -> list[str]:
    """The Dagster assets an asset document makes (`<sync id>_<object>` per sync object)."""
    from partnerships_orchestrator.compiler.naming import asset_name
    from partnerships_orchestrator.spec.models import Dataset, Metrics, Report, Sync

    if isinstance(model, Sync):
        return [asset_name(a) for a in model.asset_ids()]
    if isinstance(model, Dataset | Metrics | Report):
        return [asset_name(model.id)]
    return []


@main.command()
@click.argument("playbook_id")
@common_options
@json_option
@click.pass_context
def show(
    ctx: click.Context, playbook_id: str, playbooks: str | None, home: str | None, as_json: bool
) -> None:
    """Show a playbook's compiled step graph: parallel levels, conditions, fan-outs, error policies."""
    from partnerships_orchestrator.graph_view import describe_playbook, render_playbook

    playbook = _playbook(ctx, playbook_id)
    view = describe_playbook(playbook)
    if as_json:
        _print_json(view)
    else:
        click.echo(render_playbook(view))


def _playbook(ctx: click.Context, playbook_id: str) -> Any:
    from partnerships_orchestrator.spec.models import Playbook

    catalog = _project(ctx).strict_catalog()
    doc = catalog.get(playbook_id)
    if doc is None or not isinstance(doc, Playbook):
        known = ", ".join(p.id for p in catalog.playbooks()) or "none"
        bad = [str(p) for p in catalog.problems if playbook_id in p.file]
        hint = f"playbooks here: {known}" + ("; " + bad[0] if bad else "")
        _fail(PartnershipsError(f"no valid playbook `{playbook_id}`", hint=hint))
    return doc


@main.command()
def schema() -> None:
    """Print the JSON Schema of every document kind (for editors)."""
    from partnerships_orchestrator.spec.schema import document_schema

    _print_json(document_schema())


# ---------------------------------------------------------------- running


@main.command()
@click.argument("assets", nargs=-1)
@click.option(
    "--full-refresh",
    is_flag=True,
    help="Syncs read every record again (and mark those the CRM no longer has as deleted).",
)
@common_options
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No live progress, just the summary.")
@click.pass_context
def materialize(
    ctx: click.Context,
    assets: Sequence[str],
    full_refresh: bool,
    playbooks: str | None,
    home: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Materialize ASSETS (every asset when none is named) with live progress; exit 1 if any
    failed. Runs appear in the Dagster UI."""
    from partnerships_orchestrator.materialize import materialize_assets

    try:
        summary = materialize_assets(
            _project(ctx), assets, full_refresh=full_refresh, progress=not (quiet or as_json)
        )
    except PartnershipsError as exc:
        _fail(exc)
    if as_json:
        _print_json(summary.as_dict())
    else:
        summary.print(console)
    sys.exit(0 if summary.success else 1)


@main.command()
@click.argument("playbook_id")
@click.option(
    "--input",
    "-i",
    "inputs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A run input; repeat for several. Lists and objects take JSON.",
)
@common_options
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No live progress, just the summary.")
@click.pass_context
def run(
    ctx: click.Context,
    playbook_id: str,
    inputs: Sequence[str],
    playbooks: str | None,
    home: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run a playbook in this process with live step progress; exit 1 if the run failed."""
    project = _project(ctx)
    given = {}
    for pair in inputs:
        key, sep, value = pair.partition("=")
        if not sep:
            _fail(
                PartnershipsError(
                    f"--input `{pair}` is not KEY=VALUE", hint="e.g. --input since_days=7"
                )
            )
        given[key.strip()] = value
    with Progress(live=not (quiet or as_json)) as progress:
        try:
            summary = project.execute(playbook_id, given, on_progress=progress.show)
        except PartnershipsError as exc:
            _fail(exc)
    _print_summary(summary, as_json)


@main.command()
@click.argument("run_id")
@common_options
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No live progress, just the summary.")
@click.pass_context
def resume(
    ctx: click.Context,
    run_id: str,
    playbooks: str | None,
    home: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Finish a failed run (or one whose process died): re-execute it from failure in this
    process, as a new run of the same root run. Steps that succeeded don't run again and
    messages already delivered aren't sent again; exit 1 if it failed again."""
    project = _project(ctx)
    with Progress(live=not (quiet or as_json)) as progress:
        try:
            summary = project.resume(run_id, on_progress=progress.show)
        except PartnershipsError as exc:
            _fail(exc)
    _print_summary(summary, as_json)


@main.command()
@common_options
@json_option
@click.option("--playbook", "playbook_id", default=None, help="Only this playbook's runs.")
@click.option("--limit", default=20, show_default=True, type=int, help="At most this many.")
@click.pass_context
def runs(
    ctx: click.Context,
    playbooks: str | None,
    home: str | None,
    as_json: bool,
    playbook_id: str | None,
    limit: int,
) -> None:
    """List recent runs, newest first, with their status (runs whose process died are marked
    failed first)."""
    found = _project(ctx).runs(limit=limit, playbook_id=playbook_id)
    if as_json:
        _print_json([r.as_dict() for r in found])
        return
    table = Table("run", "playbook", "status", "started", "seconds", "via", "root run")
    for r in found:
        table.add_row(
            r.run_id,
            r.playbook or r.job,
            f"[{_RUN_STYLE.get(r.status, 'white')}]{r.status}[/]",
            (r.started_at or r.created_at).astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            f"{r.seconds:.1f}" if r.seconds is not None else "",
            r.via,
            "" if r.root_run_id == r.run_id else r.root_run_id[:8],
        )
    console.print(table)
    errors.print(f"{len(found)} run(s)", highlight=False)


_RUN_STYLE = {"SUCCESS": "green", "FAILURE": "red", "STARTED": "cyan", "CANCELED": "yellow"}
_STEP_STYLE = {
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "skipped": "yellow",
    "retrying": "magenta",
    "pending": "dim",
}


class Progress:
    """Shows a run's step progress: a live table on a terminal, one line per change otherwise.

    It writes to its own copy of stderr: while a step runs, Dagster points the process's
    stderr at the step's captured log file.
    """

    def __init__(self, live: bool) -> None:
        self.enabled = live
        self.stream = os.fdopen(os.dup(2), "w", buffering=1) if live else None
        self.console = Console(file=self.stream, width=None if self._tty() else 200)
        self.view: Live | None = None

    def _tty(self) -> bool:
        return bool(self.stream and self.stream.isatty())

    def __enter__(self) -> Progress:
        if self.enabled and self._tty():
            self.view = Live(Table(), console=self.console, refresh_per_second=8)
            self.view.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.view is not None:
            self.view.__exit__(None, None, None)
        if self.stream is not None:
            self.stream.close()

    def show(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        if self.view is None:
            self.console.print(f"  {event.status:>9}  {event.step}", highlight=False)
            return
        table = Table("step", "status", box=None, padding=(0, 2))
        for step, status in event.steps.items():
            table.add_row(step, f"[{_STEP_STYLE.get(status, 'white')}]{status}[/]")
        self.view.update(table)


def _print_summary(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        _print_json(summary.as_dict())
    else:
        counts = summary.counts()
        verdict = "[bold green]succeeded[/]" if summary.success else "[bold red]failed[/]"
        console.print(
            f"run {summary.run_id} of `{summary.playbook}` {verdict} in {summary.seconds:.1f}s"
            + (f" (resuming {summary.parent_run_id})" if summary.parent_run_id else "")
        )
        console.print(
            f"steps: {counts['succeeded']} succeeded, {counts['skipped']} skipped, "
            f"{counts['failed']} failed; messages sent: {summary.messages_sent}; "
            f"dead letters: {summary.dead_letters}",
            highlight=False,
        )
        for step_id, value in summary.outputs.items():
            text = json.dumps(jsonable(value), default=str)
            console.print(
                f"output {step_id}: {text[:300]}{'…' if len(text) > 300 else ''}",
                highlight=False,
                markup=False,
            )
        for error in summary.errors:
            console.print(f"[red]error:[/] {escape(error)}", highlight=False)
        if summary.resume_command:
            console.print(
                f"resume: `{summary.resume_command}` (steps that succeeded don't run again; "
                "messages already sent aren't sent again)",
                highlight=False,
            )
    sys.exit(0 if summary.success else 1)


@main.command()
@common_options
@json_option
@click.option("--run", "run_id", default=None, help="Only this run's messages.")
@click.option("--channel", default=None, type=click.Choice(["email", "sms", "slack", "teams"]))
@click.option("--limit", default=None, type=int, help="At most this many (newest last).")
@click.pass_context
def outbox(
    ctx: click.Context,
    playbooks: str | None,
    home: str | None,
    as_json: bool,
    run_id: str | None,
    channel: str | None,
    limit: int | None,
) -> None:
    """List what the sandbox outbox delivered."""
    messages = _project(ctx).state.outbox(run_id=run_id, channel=channel)
    messages = messages[-limit:] if limit else messages
    if as_json:
        _print_json(messages)
        return
    table = Table("time", "channel", "to", "subject", "body", "playbook", "run", "step")
    for m in messages:
        table.add_row(
            m["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            m["channel"],
            m["recipient"],
            m["subject"] or "",
            _short(m["body"]),
            m["playbook"] or "",
            (m["run_id"] or "")[:8],
            m["step"] or "",
        )
    console.print(table)
    errors.print(f"{len(messages)} message(s)", highlight=False)


def _short(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@main.group(name="dead-letters", invoke_without_command=True)
@common_options
@json_option
@click.option("--playbook", "playbook_id", default=None, help="Only this playbook's.")
@click.option("--run", "run_id", default=None, help="Only this run's.")
@click.pass_context
def dead_letters(
    ctx: click.Context,
    playbooks: str | None,
    home: str | None,
    as_json: bool,
    playbook_id: str | None,
    run_id: str | None,
) -> None:
    """List failures that ended in skip, abort or exhausted retries (`redrive ID` reruns one)."""
    if ctx.invoked_subcommand is not None:
        return
    letters = _project(ctx).state.dead_letters(playbook=playbook_id, run_id=run_id)
    if as_json:
        _print_json(letters)
        return
    table = Table("id", "time", "playbook", "step", "action", "attempts", "status", "error", "run")
    for d in letters:
        table.add_row(
            str(d["id"]),
            d["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            d["playbook"],
            d["step"],
            d["action"],
            str(d["attempts"]),
            d["status"],
            _short(d["error"], 70),
            d["run_id"][:8],
        )
    console.print(table)
    errors.print(f"{len(letters)} dead letter(s)", highlight=False)


@dead_letters.command(name="redrive")
@click.argument("letter_id", type=int)
@common_options
@json_option
@click.pass_context
def dead_letters_redrive(
    ctx: click.Context, letter_id: int, playbooks: str | None, home: str | None, as_json: bool
) -> None:
    """Run a dead letter's step again with the scope it failed with (same root run: messages
    already delivered are not sent again)."""
    try:
        done = _project(ctx).redrive(letter_id)
    except PartnershipsError as exc:
        _fail(exc)
    if as_json:
        _print_json(
            {
                "id": done.letter_id,
                "playbook": done.playbook,
                "step": done.step,
                "output": done.output,
            }
        )
    else:
        console.print(
            f"redrove dead letter {done.letter_id}: `{done.playbook}` step `{done.step}` succeeded",
            highlight=False,
        )


# ---------------------------------------------------------------- connections


@main.group()
def connections() -> None:
    """The vendors playbooks talk to (the `kind: connections` document)."""


@connections.command(name="check")
@common_options
@json_option
@click.pass_context
def connections_check(
    ctx: click.Context, playbooks: str | None, home: str | None, as_json: bool
) -> None:
    """Check each configured connection authenticates, and show its rate limit (never a secret)."""
    results = _project(ctx).check()
    if as_json:
        _print_json(results)
    else:
        table = Table("connection", "provider", "status", "rate limit", "detail")
        for r in results:
            status = {True: "[green]ok[/]", False: "[red]failed[/]"}.get(
                r["ok"], "[yellow]unchecked[/]"
            )
            table.add_row(
                r["connection"],
                r["provider"],
                status,
                r.get("rate_limit") or "",
                r.get("detail") or "",
            )
        console.print(table)
    sys.exit(1 if any(r["ok"] is False for r in results) else 0)


# ---------------------------------------------------------------- the product


@main.command()
@common_options
@click.option("--reset", is_flag=True, help="Drop the demo rows and seed them again.")
@click.pass_context
def seed(ctx: click.Context, playbooks: str | None, home: str | None, reset: bool) -> None:
    """Create the partner warehouse schema and seed demo data (if empty)."""
    counts = _seed(_settings(ctx), reset=reset)
    click.echo(", ".join(f"{n} {t}" for t, n in counts.items()))


def _seed(settings: Settings, reset: bool = False) -> dict[str, int]:
    from partnerships_orchestrator.project import Project

    return Project(settings).seed(reset=reset)


@main.command()
@common_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option(
    "--ui-port",
    "--port",
    "port",
    default=3000,
    show_default=True,
    type=int,
    help="Port of the Dagster UI (webserver).",
)
@click.option("--api-port", default=8080, show_default=True, type=int, help="Port of the HTTP API.")
@click.option(
    "--api-workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="PARTNERSHIPS_API_WORKERS",
    help="HTTP API processes (more serve more requests a second on more cores; token rate "
    "limits hold across them) [env PARTNERSHIPS_API_WORKERS].",
)
@click.option(
    "--api-access-log",
    is_flag=True,
    envvar="PARTNERSHIPS_API_ACCESS_LOG",
    help="Write a line per API request to logs/api.log (off: errors only; the audit log keeps "
    "every change and execution request) [env PARTNERSHIPS_API_ACCESS_LOG].",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM certificate: serve the API over HTTPS (with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM private key of --tls-cert.",
)
@click.option("--no-seed", is_flag=True, help="Do not seed the demo warehouse.")
@click.option(
    "--postgres",
    "postgres_url",
    default=None,
    metavar="URL",
    help="One PostgreSQL for Dagster's storage, the product's state and (unless "
    "PARTNER_WAREHOUSE_URL sets it apart) the warehouse.",
)
@click.option(
    "--no-materialize",
    is_flag=True,
    help="Do not materialize the assets on first start (with the seeded demo warehouse).",
)
@click.pass_context
def up(
    ctx: click.Context,
    playbooks: str | None,
    home: str | None,
    host: str,
    port: int,
    api_port: int,
    api_workers: int,
    api_access_log: bool,
    tls_cert: str | None,
    tls_key: str | None,
    no_seed: bool,
    postgres_url: str | None,
    no_materialize: bool,
) -> None:
    """Start the product: Dagster webserver + daemon with the playbooks loaded, and the HTTP API.
    Ctrl-C stops all.

    `ready` is printed once the code location has loaded; a location that failed to load is
    printed with its error and `up` exits 1."""
    from partnerships_orchestrator import launcher

    if bool(tls_cert) != bool(tls_key):
        _fail(
            PartnershipsError("--tls-cert and --tls-key go together", hint="give both or neither")
        )
    if postgres_url:
        use_postgres(postgres_url)
    project = _project(ctx)
    settings = project.settings
    try:
        os.environ["DAGSTER_HOME"] = str(project.prepare())
    except PartnershipsError as exc:
        _fail(exc)
    first_start: list[Any] = []
    if not no_seed and "PARTNER_WAREHOUSE_URL" not in os.environ:
        counts = _seed(settings)
        errors.print(f"warehouse: {settings.warehouse_db} ({counts.get('partners', 0)} partners)")
        if not no_materialize:
            from partnerships_orchestrator.materialize import first_start_assets

            first_start = first_start_assets(project)
    catalog = project.strict_catalog()
    errors.print(
        f"playbooks: {settings.playbooks_dir} ({len(catalog.playbooks())} valid, "
        f"{len(catalog.invalid_files)} invalid file(s))"
    )
    for problem in catalog.problems:
        errors.print(f"  [yellow]{escape(str(problem))}[/]", highlight=False)
    errors.print(f"state: {settings.home}   dagster home: {settings.dagster_home}")
    _first_admin_token(settings)
    api = launcher.ApiOptions(
        port=api_port,
        workers=api_workers,
        access_log=api_access_log,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    say = lambda line: errors.print(line, highlight=False, markup=False)  # noqa: E731
    code = launcher.run_stack(
        settings,
        host,
        port,
        say,
        api=api,
        on_ready=(lambda url: _materialize_first_start(project, first_start, url, say))
        if first_start
        else None,
    )
    sys.exit(code)


def _materialize_first_start(
    project: Project, keys: list[Any], ui_url: str, say: Callable[[str], None]
) -> None:
    """Launch the first start's materialization as a run the UI shows live."""
    from partnerships_orchestrator.api.problems import Problem
    from partnerships_orchestrator.materialize import launch_first_start

    try:
        launch_first_start(project, keys, ui_url, say)
    except Problem as exc:
        say(f"the first start's materialization was not launched: {exc.detail}")
        say("run `partnerships materialize` to materialize the assets")


def _first_admin_token(settings: Settings) -> None:
    """On first start (no live admin token), make one and print it this once."""
    from partnerships_orchestrator.store.tokens import TokenStore

    tokens = TokenStore(settings.state_url)
    if tokens.any_admin():
        return
    made, secret = tokens.create(role="admin", teams=["*"], name="first admin")
    errors.print(
        f"admin API token ({made.id}, shown only now; `partnerships token` manages tokens):",
        highlight=False,
    )
    click.echo(f"PARTNERSHIPS_API_TOKEN={secret}")


# ---------------------------------------------------------------- API tokens


@main.group()
def token() -> None:
    """Bearer tokens of the HTTP API (stored hashed; the secret is printed once)."""


@token.command(name="create")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["viewer", "operator", "editor", "admin"]),
    help="viewer < operator (execute, cancel, retry, redrive) < editor (change playbooks) "
    "< admin (tokens, audit).",
)
@click.option(
    "--team",
    "teams",
    multiple=True,
    required=True,
    help="A team whose playbooks (`owners`) the token may see and act on; repeat for several; "
    "`*` for every team.",
)
@click.option("--name", default="", help="What the token is for.")
@click.option(
    "--rate-limit", type=int, default=None, help="Requests a minute (default: the API's)."
)
@common_options
@json_option
@click.pass_context
def token_create(
    ctx: click.Context,
    role: str,
    teams: Sequence[str],
    name: str,
    rate_limit: int | None,
    playbooks: str | None,
    home: str | None,
    as_json: bool,
) -> None:
    """Make a token; its secret is printed once (only a hash is kept)."""
    from partnerships_orchestrator.store.tokens import TokenStore

    try:
        made, secret = TokenStore(_settings(ctx).state_url).create(
            role=role, teams=list(teams), name=name, rate_limit=rate_limit
        )
    except PartnershipsError as exc:
        _fail(exc)
    if as_json:
        _print_json({**made.as_dict(), "token": secret})
        return
    errors.print(
        f"token {made.id} ({made.role} for {', '.join(made.teams)}); the secret is shown only now:",
        highlight=False,
    )
    click.echo(secret)


@token.command(name="list")
@common_options
@json_option
@click.pass_context
def token_list(ctx: click.Context, playbooks: str | None, home: str | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    from partnerships_orchestrator.store.tokens import TokenStore

    tokens = TokenStore(_settings(ctx).state_url).list()
    if as_json:
        _print_json([t.as_dict() for t in tokens])
        return
    table = Table("id", "name", "role", "teams", "rate limit", "created", "last used", "revoked")
    stamp = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else ""  # noqa: E731
    for t in tokens:
        table.add_row(
            t.id,
            t.name,
            t.role,
            ", ".join(t.teams),
            str(t.rate_limit or ""),
            stamp(t.created_at),
            stamp(t.last_used_at),
            stamp(t.revoked_at),
        )
    console.print(table)


@token.command(name="revoke")
@click.argument("token_id")
@common_options
@click.pass_context
def token_revoke(
    ctx: click.Context, token_id: str, playbooks: str | None, home: str | None
) -> None:
    """Revoke a token by its id (`tok_...`); it stops working at once."""
    from partnerships_orchestrator.store.tokens import TokenStore

    try:
        revoked = TokenStore(_settings(ctx).state_url).revoke(token_id)
    except PartnershipsError as exc:
        _fail(exc)
    errors.print(f"revoked {revoked.id} ({revoked.role} for {', '.join(revoked.teams)})")


def use_postgres(url: str) -> None:
    """`--postgres URL`: Dagster storage and state there, and the warehouse unless set apart."""
    from partnerships_orchestrator.instance import POSTGRES_ENV
    from partnerships_orchestrator.settings import DATABASE_ENV

    os.environ[POSTGRES_ENV] = url
    os.environ[DATABASE_ENV] = url
    os.environ.setdefault("PARTNER_WAREHOUSE_URL", url)


@main.command()
@common_options
@click.option(
    "--name",
    default=None,
    help="Worker name, unique per machine (default partnerships-<pid>; @hostname is appended).",
)
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Steps this worker runs at once [default: one per CPU core].",
)
@click.pass_context
def worker(
    ctx: click.Context,
    playbooks: str | None,
    home: str | None,
    name: str | None,
    concurrency: int | None,
) -> None:
    """Run playbook steps sent by the Celery executor (PARTNERSHIPS_EXECUTOR=celery) until
    stopped (Ctrl-C / SIGTERM: the steps it is running finish first): the Celery worker of
    Dagster's `dagster-celery`, with the product's settings."""
    from urllib.parse import urlsplit

    from partnerships_orchestrator import launcher
    from partnerships_orchestrator.compiler.executor import celery_config
    from partnerships_orchestrator.worker import worker_command

    project = _project(ctx)
    try:
        dagster_home = project.prepare()
    except PartnershipsError as exc:
        _fail(exc)
    os.environ["DAGSTER_HOME"] = str(dagster_home)  # where dagster-celery writes its config
    argv, env = worker_command(
        project.settings,
        dagster_home,
        launcher.child_environment(project.settings),
        name=name,
        concurrency=concurrency,
    )
    broker = urlsplit(celery_config()["broker"])  # host and port only: the URL may hold a password
    errors.print(f"worker: steps from the broker at {broker.hostname}:{broker.port or 5672}")
    os.execve(argv[0], argv, env)  # nosec B606 # our own fixed argv; the worker replaces this process


if __name__ == "__main__":
    main()
