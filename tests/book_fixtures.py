"""The built book, shared by the tests that read it (import the fixture: ``from book_fixtures import
built_book``).

``BOOK_HTML=_build/html`` (what ``make test`` passes after ``make book``) uses a site that is already
built; without it the fixture vendors the offline assets and builds the book once per session, with
warnings as errors, into a temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# jupyter-book 1.x has no `python -m jupyter_book`: call its command-line entry point.
JUPYTER_BOOK = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]


def toc_pages() -> list[str]:
    """Every page of _toc.yml (root first), as document names without a suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [str(Path(p).with_suffix("")) if Path(p).suffix in (".md", ".ipynb") else p for p in pages]


def build_book(out: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "tools" / "vendor_assets.py")], check=False, timeout=900)
    cmd = [*JUPYTER_BOOK, "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The folder of the built HTML book."""
    given = os.environ.get("BOOK_HTML")
    if given:
        html = Path(given).resolve()
        assert (html / "index.html").is_file(), f"BOOK_HTML={given}: no index.html there (make book)"
        return html
    return build_book(tmp_path_factory.mktemp("book"))
