"""The book builds with warnings as errors, and every chapter page exists with its figures."""

import re
from html.parser import HTMLParser

from book_fixtures import built_book, toc_pages  # noqa: F401  (built_book is a fixture)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def test_every_page_exists_with_its_figures(built_book):  # noqa: F811 - the imported fixture
    html_dir = built_book
    for f in toc_pages():
        page = html_dir / f"{f}.html"
        assert page.exists(), f"{f}: no page {page.name} in the built book"
        parser = _Images()
        parser.feed(page.read_text(encoding="utf-8"))
        figures = [s for s in parser.srcs if not s.startswith(("http", "data:")) and "logo" not in s]
        for src in figures:
            assert (page.parent / src.split("#")[0]).resolve().exists(), f"{f}: missing image {src}"
        if f.startswith("notebooks/") or f == "book/paper":
            assert figures, f"{f}: a chapter page without any figure"
            assert re.search(r"\S", parser.title), f"{f}: page without a title"
