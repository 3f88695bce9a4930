"""A report: a sandboxed Jinja2 template over datasets and metrics -> Markdown -> HTML -> PDF.

The template sees ``data.<id>`` (the rows of each dataset or sync table it lists; deleted CRM
records left out), ``metrics.<id>.<metric>`` (the latest value of each metric), ``report``
(``id``, ``title``, ``generated_at``), the expression helpers and filters, and
``chart(kind, rows, x, y, title)`` for SVG bar and line charts. Values are HTML-escaped, so data
cannot inject markup.

The HTML has a print stylesheet: a title page, a table of contents with page numbers, page
numbers in the footer, table headers repeated on every page a table spans and rows never split.
WeasyPrint renders it to PDF, loading nothing but ``data:`` URLs and files under the templates
folder. Files go to ``<home>/artifacts/reports/<report id>/<run id>/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

import markdown
import sqlalchemy as sa
from jinja2 import FileSystemLoader, TemplateNotFound, TemplateSyntaxError
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SecurityError

from partnerships_orchestrator.assets.chart import ChartError, chart
from partnerships_orchestrator.errors import ExpressionError, StepError
from partnerships_orchestrator.expressions import make_environment
from partnerships_orchestrator.spec.models import Report
from partnerships_orchestrator.warehouse import metric_history

MAX_ROWS = 50_000
PREVIEW_CHARS = 4000
MARKDOWN_EXTENSIONS = ("tables", "fenced_code", "toc")
REPORT_CSS = """
@page { size: A4; margin: 20mm 18mm 22mm;
        @bottom-center { content: counter(page) " / " counter(pages); font-size: 8pt;
                         color: #57606a; }
        @top-right { content: string(title); font-size: 8pt; color: #57606a; } }
@page :first { @bottom-center { content: none; } @top-right { content: none; } }
body { font-family: "DejaVu Sans", "Helvetica", "Arial", sans-serif; font-size: 10pt;
       line-height: 1.45; color: #1f2328; }
.title-page { break-after: page; padding-top: 70mm; }
.title-page h1 { font-size: 28pt; border: none; string-set: title content(); margin: 0; }
.title-page .subtitle { font-size: 13pt; color: #57606a; margin-top: 6mm; }
.title-page .meta { margin-top: 40mm; font-size: 9pt; color: #57606a; }
nav.toc { break-after: page; }
nav.toc h2 { font-size: 16pt; }
nav.toc ul { list-style: none; padding-left: 0; }
nav.toc ul ul { padding-left: 1.2em; }
nav.toc li { margin: 0.2em 0; }
nav.toc a { color: #1f2328; text-decoration: none; }
nav.toc a::after { content: leader(".") target-counter(attr(href), page); }
h1, h2, h3 { line-height: 1.2; margin: 1.2em 0 0.4em; break-after: avoid; }
h1 { font-size: 20pt; } h2 { font-size: 15pt; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 12pt; }
table { border-collapse: collapse; margin: 0.8em 0; width: 100%; font-size: 9pt; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.chart { break-inside: avoid; margin: 0.8em 0; }
.chart svg { max-width: 100%; height: auto; }
code, pre { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; }
"""


@dataclass
class RenderedReport:
    markdown: str
    html: str
    files: dict[str, Path] = field(default_factory=dict)
    pages: int | None = None


class Rows(list[dict[str, Any]]):
    """A dataset's rows (``data.<id>``, also ``data.<id>.rows``; ``| length`` counts them)."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value


def load_data(engine: sa.Engine, table: str) -> Rows:
    """The rows of a dataset or sync table (live CRM records only, ``raw`` left out)."""
    columns = [c["name"] for c in sa.inspect(engine).get_columns(table)]
    if not columns:
        raise StepError(
            f"report data `{table}` is not in the warehouse",
            hint="materialize it first (`partnerships materialize " + table + "`)",
        )
    shown = ", ".join(f'"{c}"' for c in columns if c != "raw")
    where = " WHERE NOT is_deleted" if "is_deleted" in columns else ""
    with engine.connect() as conn:
        result = conn.execute(sa.text(f'SELECT {shown} FROM "{table}"{where} LIMIT {MAX_ROWS}'))  # nosec B608 # identifiers from the table's own reflected columns, quoted
        return Rows({k: _plain(v) for k, v in row.items()} for row in result.mappings())


def latest_metrics(engine: sa.Engine, metrics_set: str) -> dict[str, float | None]:
    """The latest value of each metric of a metrics set, from ``metric_history``."""
    h = metric_history
    newest = (
        sa.select(h.c.metric, sa.func.max(h.c.id).label("id"))
        .where(h.c.metrics_set == metrics_set)
        .group_by(h.c.metric)
        .subquery()
    )
    query = sa.select(h.c.metric, h.c.value).join(newest, newest.c.id == h.c.id)
    with engine.connect() as conn:
        return {m: v for m, v in conn.execute(query)}


def render_markdown(
    report: Report,
    templates_dir: Path,
    data: dict[str, Rows],
    metrics: dict[str, dict[str, float | None]],
    generated_at: datetime,
) -> str:
    """The report's Markdown (the template rendered in the sandbox)."""
    env = make_environment(loader=FileSystemLoader(str(templates_dir)), autoescape=True)
    env.globals["chart"] = chart
    context = {
        "data": data,
        "metrics": metrics,
        "report": {"id": report.id, "title": title_of(report), "generated_at": generated_at},
    }
    where = f"report `{report.id}`: template `{report.template}`"
    try:
        return env.get_template(report.template).render(context)
    except TemplateNotFound as exc:
        raise StepError(
            f"{where}: `{exc.name}` not found under {templates_dir}",
            hint="paths are relative to the templates folder",
        ) from None
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"{where} line {exc.lineno}: {exc.message}") from None
    except UndefinedError as exc:
        raise ExpressionError(
            f"{where}: {exc.message}",
            hint="names in scope: data.<id> for the listed data, metrics.<id>.<metric>, report, "
            "chart() and the helpers",
        ) from None
    except (SecurityError, ChartError) as exc:
        raise ExpressionError(f"{where}: {exc}") from None


def title_of(report: Report) -> str:
    return report.title or report.name or report.id


def render_html(report: Report, md: str, generated_at: datetime, sources: list[str]) -> str:
    """A complete HTML document: title page, contents with page numbers, the body."""
    converter = markdown.Markdown(extensions=list(MARKDOWN_EXTENSIONS), output_format="html")
    body = converter.convert(md)
    toc = _toc(getattr(converter, "toc_tokens", []))
    title = escape(title_of(report))
    subtitle = escape(report.description or "")
    meta = (
        f"Generated {generated_at:%d %B %Y, %H:%M} UTC<br>"
        f"Data: {escape(', '.join(sources) or 'none')}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{REPORT_CSS}</style>\n</head>\n<body>\n"
        f'<section class="title-page"><h1>{title}</h1>'
        f'<div class="subtitle">{subtitle}</div><div class="meta">{meta}</div></section>\n'
        f'<nav class="toc"><h2>Contents</h2>{toc}</nav>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _toc(tokens: list[dict[str, Any]]) -> str:
    if not tokens:
        return ""
    items = "".join(
        f'<li><a href="#{escape(t["id"])}">{t["name"]}</a>{_toc(t.get("children", []))}</li>'
        for t in tokens
    )
    return f"<ul>{items}</ul>"


def write_pdf(html: str, path: Path, templates_dir: Path) -> int:
    """Write the PDF; return its page count (WeasyPrint imported only here)."""
    from weasyprint import HTML

    from partnerships_orchestrator.steps.pdf import LocalOnlyFetcher

    path.parent.mkdir(parents=True, exist_ok=True)
    document = HTML(
        string=html,
        base_url=str(templates_dir.resolve()) + "/",
        url_fetcher=LocalOnlyFetcher(templates_dir),
    ).render()
    document.write_pdf(path)
    return len(document.pages)


def render_report(
    report: Report,
    templates_dir: Path,
    out_dir: Path,
    data: dict[str, Rows],
    metrics: dict[str, dict[str, float | None]],
    generated_at: datetime | None = None,
) -> RenderedReport:
    """Render the report in each of its formats into ``out_dir``."""
    when = generated_at or datetime.now(UTC).replace(tzinfo=None)
    md = render_markdown(report, templates_dir, data, metrics, when)
    html = render_html(report, md, when, list(report.data))
    rendered = RenderedReport(md, html)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = report.id
    if "markdown" in report.formats:
        rendered.files["markdown"] = _write(out_dir / f"{stem}.md", md)
    if "html" in report.formats:
        rendered.files["html"] = _write(out_dir / f"{stem}.html", html)
    if "pdf" in report.formats:
        path = out_dir / f"{stem}.pdf"
        rendered.pages = write_pdf(html, path, templates_dir)
        rendered.files["pdf"] = path
    (out_dir / "report.json").write_text(
        json.dumps({"report": report.id, "generated_at": when.isoformat(), "pages": rendered.pages})
    )
    return rendered


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def preview(md: str) -> str:
    """The Markdown for the asset's metadata (charts left out, shortened)."""
    import re

    text = re.sub(r'<div class="chart">.*?</div>', "*(chart)*", md, flags=re.S)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "\n\n*(shortened)*"
