"""PDF rendering with WeasyPrint, loading nothing but `data:` URLs and files under templates/.

Kept apart from the template step so that WeasyPrint (about half a second to import) is loaded
only by runs that make a PDF.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from weasyprint import HTML
from weasyprint.urls import URLFetcher


def write_pdf(html: str, path: Path, *, resources_dir: Path | None = None) -> Path:
    """Write ``html`` as a PDF at ``path``; relative images resolve under ``resources_dir``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base_url = str(resources_dir.resolve()) + "/" if resources_dir else None
    fetcher = LocalOnlyFetcher(resources_dir)
    HTML(string=html, base_url=base_url, url_fetcher=fetcher).write_pdf(path)
    return path


class LocalOnlyFetcher(URLFetcher):
    """WeasyPrint fetcher for ``data:`` URLs and files under one folder; nothing else."""

    def __init__(self, root: Path | None) -> None:
        super().__init__(allowed_protocols=("data", "file"), allow_redirects=False)
        self._root = root.resolve() if root else None

    def fetch(self, url: str, headers: Any = None) -> Any:
        if url.startswith("file:"):
            local = Path(re.sub(r"^file:(//)?", "", url.split("?")[0].split("#")[0]))
            if self._root is None or not local.resolve().is_relative_to(self._root):
                raise ValueError(f"refused to load {url}: outside the templates folder")
        elif not url.startswith("data:"):
            raise ValueError(f"refused to load {url}: only data: URLs and template files")
        return super().fetch(url, headers)
