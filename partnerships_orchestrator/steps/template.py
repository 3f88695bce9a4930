"""The ``template`` step: a sandboxed Jinja2 template rendered to Markdown, text, HTML or PDF.

Templates are user input: they render in the expression sandbox with ``StrictUndefined``, and
when the output is HTML (``html``, ``pdf``) interpolated values are HTML-escaped, so a partner
named ``<script>`` stays text. Markdown becomes HTML through python-markdown; HTML becomes PDF
through WeasyPrint, which may load only ``data:`` URLs and files under the templates folder
(never the network: a value like ``![x](http://169.254.169.254/)`` must not be fetched).
"""

from __future__ import annotations

import re
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any

import markdown
from jinja2 import FileSystemLoader, Template, TemplateNotFound, TemplateSyntaxError
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from partnerships_orchestrator.errors import ExpressionError, StepError
from partnerships_orchestrator.expressions import make_environment, render_value
from partnerships_orchestrator.spec.models import TemplateStep
from partnerships_orchestrator.steps.context import StepContext

INLINE = "<inline source>"
HTML_SUFFIXES = (".html", ".html.j2", ".htm", ".htm.j2")
MARKDOWN_EXTENSIONS = ("tables", "fenced_code")
PRINT_CSS = """
@page { size: A4; margin: 20mm 18mm; }
body { font-family: "DejaVu Sans", "Helvetica", "Arial", sans-serif; font-size: 10.5pt;
       line-height: 1.45; color: #1f2328; max-width: 48em; margin: 0 auto; }
h1, h2, h3, h4 { line-height: 1.2; margin: 1.2em 0 0.4em; }
h1 { font-size: 20pt; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
h2 { font-size: 15pt; } h3 { font-size: 12.5pt; }
table { border-collapse: collapse; margin: 0.8em 0; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr { page-break-inside: avoid; }
code, pre { font-family: "DejaVu Sans Mono", monospace; font-size: 9pt; background: #f6f8fa; }
pre { padding: 8px; white-space: pre-wrap; }
a { color: #0969da; }
"""


def run(step: TemplateStep, ctx: StepContext) -> str:
    """Render the step; the output is the text, or the written file's path for ``pdf``."""
    html_out = step.format in ("html", "pdf")
    template = _load(step, ctx.settings.templates_dir, autoescape=html_out)
    context = {**ctx.scope, **render_value(step.context, ctx.scope)}
    rendered = _render(template, context, ctx.settings.templates_dir)
    if not html_out:
        return rendered
    title = step.name or step.id
    html = rendered if _is_html(step.template) else render_markdown_to_html(rendered, title)
    if step.format == "html":
        return html
    path = ctx.settings.artifacts_dir / ctx.run.id / f"{_file_stem(ctx.step_key)}.pdf"
    return str(write_pdf(html, path, resources_dir=ctx.settings.templates_dir))


def render_markdown_to_html(md: str, title: str) -> str:
    """A complete HTML document (with the print stylesheet) from Markdown text."""
    body = markdown.markdown(md, extensions=list(MARKDOWN_EXTENSIONS), output_format="html")
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{PRINT_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def write_pdf(html: str, path: Path, *, resources_dir: Path | None = None) -> Path:
    """Write ``html`` as a PDF at ``path`` (WeasyPrint is imported only when a PDF is made)."""
    from partnerships_orchestrator.steps.pdf import write_pdf as render

    return render(html, path, resources_dir=resources_dir)


def template_exists(templates_dir: Path, name: str) -> bool:
    """Whether ``name`` is a file inside ``templates_dir`` (paths escaping it never exist)."""
    path = _inside(templates_dir, name)
    return path is not None and path.is_file()


# ---------------------------------------------------------------- loading and rendering


@lru_cache(maxsize=32)
def environment(templates_dir: Path, autoescape: bool) -> SandboxedEnvironment:
    """The sandboxed environment for one templates folder (cached: it caches compiled files)."""
    return make_environment(loader=FileSystemLoader(str(templates_dir)), autoescape=autoescape)


@lru_cache(maxsize=256)
def _inline(templates_dir: Path, autoescape: bool, source: str) -> Template:
    return environment(templates_dir, autoescape).from_string(source)


def _inside(templates_dir: Path, name: str) -> Path | None:
    root = templates_dir.resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path != root else None


def _load(step: TemplateStep, templates_dir: Path, *, autoescape: bool) -> Template:
    where = step.template or INLINE
    try:
        if step.source is not None:
            return _inline(templates_dir, autoescape, step.source)
        assert step.template is not None  # nosec B101 # invariant for mypy: the model requires `template` or `source`
        if _inside(templates_dir, step.template) is None:
            raise StepError(
                f"template step `{step.id}`: `{step.template}` is outside the templates folder",
                hint=f"give a path relative to {templates_dir}",
            )
        return environment(templates_dir, autoescape).get_template(step.template)
    except TemplateNotFound:
        raise StepError(
            f"template step `{step.id}`: template `{where}` not found under {templates_dir}",
            hint="check the file name (paths are relative to the templates folder)",
        ) from None
    except TemplateSyntaxError as exc:
        raise ExpressionError(
            f"template `{where}` line {exc.lineno}: {exc.message}", hint="Jinja2 template syntax"
        ) from None


def _render(template: Template, context: dict[str, Any], templates_dir: Path) -> str:
    try:
        return template.render(context)
    except UndefinedError as exc:
        raise ExpressionError(
            f"template {_where(template, exc, templates_dir)}: {exc.message}",
            hint="names in scope are inputs, steps.<id>.output, item, trigger, run, helpers "
            "and the step's `context`",
        ) from None
    except SecurityError as exc:
        raise ExpressionError(
            f"template {_where(template, exc, templates_dir)}: not allowed in the sandbox: {exc}"
        ) from None
    except TemplateNotFound as exc:  # an {% include %} of a missing file
        raise StepError(
            f"template {_where(template, exc, templates_dir)}: includes `{exc.name}`, "
            "which does not exist",
            hint="paths are relative to the templates folder",
        ) from None
    except TemplateSyntaxError as exc:  # an included file that does not parse
        raise ExpressionError(f"template `{exc.name}` line {exc.lineno}: {exc.message}") from None


def _where(template: Template, exc: BaseException, templates_dir: Path) -> str:
    """`` `name` line N `` of the innermost template frame (Jinja maps frames to template lines)."""
    name, line = template.name or INLINE, "?"
    tb = exc.__traceback__
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:  # a frame Jinja rewrote
            name, line = _display(tb.tb_frame.f_code.co_filename, templates_dir), str(tb.tb_lineno)
        tb = tb.tb_next
    return f"`{name}` line {line}"


def _display(filename: str, templates_dir: Path) -> str:
    if filename == "<template>":
        return INLINE
    path = Path(filename)
    root = templates_dir.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else filename


def _is_html(name: str | None) -> bool:
    return name is not None and name.lower().endswith(HTML_SUFFIXES)


def _file_stem(step_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", step_key).strip("._") or "output"
