"""The template step: Markdown, text, HTML and PDF output from sandboxed Jinja2 templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from partnerships_orchestrator.errors import ExpressionError, StepError
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.models import TemplateStep
from partnerships_orchestrator.steps import pdf, template
from partnerships_orchestrator_tests.steps.conftest import MakeContext, Receiver

PARTNER = {"name": "Acme & <Co>", "deals": 2}
FILES = {
    "messages/welcome.md.j2": (
        "# Welcome, {{ item.name }}\n\n| deals | since |\n|---|---|\n"
        "| {{ item.deals }} | {{ inputs.since }} |\n"
    ),
    "pages/card.html.j2": "<section><h2>{{ item.name }}</h2></section>",
    "messages/broken.md.j2": "Hello\n\n{{ item.name }} has {{ nope }} deals\n",
    "messages/outer.md.j2": "Top\n{% include 'partials/inner.md.j2' %}\n",
    "partials/inner.md.j2": "line one\nline two {{ missing_name }}\n",
    "messages/sandbox.md.j2": "{{ item.__class__.__mro__ }}",
}


@pytest.fixture(autouse=True)
def templates(settings: Settings) -> Path:
    for name, text in FILES.items():
        path = settings.templates_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (settings.templates_dir.parent / "secret.md").write_text("top secret")
    return settings.templates_dir


def make_step(**fields: Any) -> TemplateStep:
    return TemplateStep.model_validate({"id": "welcome", "type": "template", **fields})


def render(make_ctx: MakeContext, **fields: Any) -> str:
    step = make_step(**fields)
    return template.run(step, make_ctx(step, item=PARTNER, inputs={"since": "2024"}))


@pytest.mark.parametrize(
    ("fields", "present", "absent"),
    [
        (
            {"template": "messages/welcome.md.j2", "format": "markdown"},
            ["# Welcome, Acme & <Co>\n", "| 2 | 2024 |"],
            ["<h1>", "&amp;"],
        ),
        (
            {"template": "messages/welcome.md.j2", "format": "text"},
            ["# Welcome, Acme & <Co>"],
            ["<h1>"],
        ),
        (
            {"template": "messages/welcome.md.j2", "format": "html"},
            [
                "<!DOCTYPE html>",
                "<title>welcome</title>",
                "<h1>Welcome, Acme &amp; &lt;Co&gt;</h1>",
                "<td>2</td>",
                "border-collapse",
            ],
            ["<Co>"],
        ),
        (
            {"source": "**{{ item.name }}**", "format": "html", "name": "Card"},
            ["<title>Card</title>", "<strong>Acme &amp; &lt;Co&gt;</strong>"],
            ["<Co>"],
        ),
        (
            {"template": "pages/card.html.j2", "format": "html"},
            ["<section><h2>Acme &amp; &lt;Co&gt;</h2></section>"],
            ["<!DOCTYPE html>", "<Co>"],
        ),
    ],
)
def test_formats_render_as_expected(
    make_ctx: MakeContext, fields: dict[str, Any], present: list[str], absent: list[str]
) -> None:
    output = render(make_ctx, **fields)
    for text in present:
        assert text in output
    for text in absent:
        assert text not in output


def test_context_values_interpolate_and_keep_their_types(make_ctx: MakeContext) -> None:
    output = render(
        make_ctx,
        source="{{ greeting }}, {{ who }}: {{ n + 1 }} ({{ tags | join('/') }})",
        format="text",
        context={
            "greeting": "Hi",
            "who": "{{ item.name }}",
            "n": "{{ item.deals }}",
            "tags": ["{{ inputs.since }}", "x"],
        },
    )
    assert output == "Hi, Acme & <Co>: 3 (2024/x)"


@pytest.mark.parametrize(
    ("fields", "fragments"),
    [
        (
            {"template": "messages/broken.md.j2"},
            ["`messages/broken.md.j2` line 3", "'nope' is undefined"],
        ),
        (
            {"template": "messages/outer.md.j2"},
            ["`partials/inner.md.j2` line 2", "'missing_name' is undefined"],
        ),
        ({"source": "ok\n{{ item.nope }}"}, ["`<inline source>` line 2", "nope"]),
        ({"template": "messages/sandbox.md.j2"}, ["`messages/sandbox.md.j2` line 1"]),
        ({"source": "{% if %}"}, ["`<inline source>` line 1"]),
    ],
)
def test_template_errors_name_the_file_and_line(
    make_ctx: MakeContext, fields: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ExpressionError) as caught:
        render(make_ctx, **fields)
    for fragment in fragments:
        assert fragment in caught.value.message


@pytest.mark.parametrize("name", ["../secret.md", "messages/../../secret.md", "/etc/passwd", "."])
def test_paths_escaping_the_templates_folder_are_refused(
    make_ctx: MakeContext, settings: Settings, name: str
) -> None:
    with pytest.raises(StepError, match="outside the templates folder"):
        render(make_ctx, template=name)
    assert not template.template_exists(settings.templates_dir, name)


@pytest.mark.parametrize(
    ("name", "exists"),
    [("messages/welcome.md.j2", True), ("messages/nope.md.j2", False), ("messages", False)],
)
def test_template_exists(settings: Settings, name: str, exists: bool) -> None:
    assert template.template_exists(settings.templates_dir, name) is exists


def test_missing_template_is_a_step_error(make_ctx: MakeContext) -> None:
    with pytest.raises(StepError, match=r"template `messages/nope.md.j2` not found"):
        render(make_ctx, template="messages/nope.md.j2")


def test_pdf_is_written_under_artifacts_run_and_step_key(
    make_ctx: MakeContext, settings: Settings, receiver: Receiver
) -> None:
    step = make_step(
        source="# {{ item.name }}\n\n![pixel]({{ inputs.url }})\n\n| a |\n|---|\n| 1 |\n",
        format="pdf",
    )
    before = len(receiver.received)
    ctx = make_ctx(
        step, item=PARTNER, mapping_key="acme/1", inputs={"url": f"{receiver.base_url}/echo"}
    )
    path = Path(template.run(step, ctx))
    assert path == settings.artifacts_dir / "run-1" / "welcome_acme_1.pdf"
    assert path.read_bytes().startswith(b"%PDF")
    assert len(receiver.received) == before  # the renderer never fetched the image URL


def test_write_pdf_loads_images_from_templates_but_not_outside(tmp_path: Path) -> None:
    root = tmp_path / "tpl"
    root.mkdir()
    fetcher = pdf.LocalOnlyFetcher(root)
    (root / "a.txt").write_text("a")
    assert fetcher.fetch((root / "a.txt").as_uri())
    for url in ((tmp_path / "x.txt").as_uri(), "http://127.0.0.1:9/x.png", "ftp://e.org/x"):
        with pytest.raises(ValueError, match="refused"):
            fetcher.fetch(url)
