"""Prose must not carry hand-typed measurements.

A number that a cell measured (an accuracy, a throughput, a time, a speed-up) belongs in the cell's
output, or in the prose through `glue`; typed into the prose it goes stale at the next run, on another
machine, or in QUICK mode, and nothing notices. This test scans the prose of the book (the markdown cells
of the notebooks and the pages in book/, without their code) for the shapes such numbers take:
percentages with decimals, "N points", "N img/s", "N GFLOP/s", "N s", "N minutes", "N days", "Nx faster"
and spelled-out durations. Every hit must be on the allow-list below, which holds the numbers that are
quoted or cited (the paper's results, published hardware figures, formula constants, settings), each with
its reason; anything else fails the test, naming the file, the cell and the sentence.

Run against the prose as it was before this test existed, it found four hand-typed measurements, all
since reworded to refer to the cells' outputs or to cited figures: chapter 2's "a GPU, with tens to hundreds
of times the FLOP rate of a laptop CPU" and "thousands of times LeNet-5's FLOPs", chapter 7's d2l accuracy
"0.882 (88.2%)" (copied, not verifiable against one fixed source), and chapter 8's "a single epoch takes a
quarter of an hour" (the stored measurement says otherwise).

Limits: the test reads prose only. Numbers typed into a code cell's f-string (for example a published
accuracy printed as a table cell) are code, reviewed as code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The shapes of a typed measurement. Each pattern matches the number with its unit.
NUMBER = r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"  # 12, 1,234, 27.7
PATTERNS = {
    "percentage with decimals": re.compile(r"(?<![\w.])\d+\.\d+\s?%"),
    "percentage points": re.compile(
        r"(?<![\w.])(?:[+\-−]\d+(?:\.\d+)?|\d+\.\d+)\s?(?:percentage )?points?\b"),
    "throughput": re.compile(NUMBER + r"\s?(?:img/s|images/s|images per second|img/cpu-s)"),
    "FLOP rate": re.compile(NUMBER + r"\s?[GT]FLOP/s"),
    "duration": re.compile(
        NUMBER + r"(?:\s(?:s|h)|\s?(?:sec|seconds?|ms|milliseconds?|min|minutes?|hours?|days?))\b"),
    "speed-up": re.compile(NUMBER + r"\s?(?:x|×|times) (?:faster|slower|sooner|less time|more time)"),
    "spelled-out duration": re.compile(r"\b(?:a quarter of an hour|half an hour|an hour and a half)\b"),
    "spelled-out ratio": re.compile(
        r"\b(?:tens|hundreds|thousands)(?: to (?:tens|hundreds|thousands))? of times\b"),
}

# (file, hit, reason). `file` is the path relative to the repository root; `hit` the matched text.
ALLOWED: list[tuple[str, str, str]] = [
    # The paper's own numbers (Krizhevsky et al. 2012), quoted on the summary page and in the chapters.
    ("book/paper.md", "1.7% / 1.2%", "paper, Section 3.2 (two-GPU scheme)"),
    ("book/paper.md", "1.4% / 1.2%", "paper, Section 3.3 (LRN)"),
    ("book/paper.md", "0.4% / 0.3%", "paper, Section 3.4 (overlapping pooling)"),
    ("book/paper.md", "47.1%", "paper, Table 1"),
    ("book/paper.md", "28.2%", "paper, Table 1"),
    ("book/paper.md", "45.7%", "paper, Table 1"),
    ("book/paper.md", "25.7%", "paper, Table 1"),
    ("book/paper.md", "37.5%", "paper, Table 1"),
    ("notebooks/08_training_fast.ipynb", "37.5%", "paper, Table 1 (ILSVRC-2010 test top-1 error)"),
    ("notebooks/08_training_fast.ipynb", "62.5%", "100% minus the paper's 37.5% top-1 error (Table 1)"),
    ("book/paper.md", "17.0%", "paper, Table 1"),
    ("book/paper.md", "26.2%", "paper, Table 2"),
    ("book/paper.md", "40.7%", "paper, Table 2"),
    ("book/paper.md", "18.2%", "paper, Table 2"),
    ("book/paper.md", "38.1%", "paper, Table 2"),
    ("book/paper.md", "16.4%", "paper, Table 2"),
    ("book/paper.md", "39.0%", "paper, Table 2"),
    ("book/paper.md", "18.3%", "paper, Section 6 footnote 5 (no ten-crop averaging, top-5)"),
    ("book/paper.md", "16.6%", "paper, Table 2"),
    ("book/paper.md", "36.7%", "paper, Table 2"),
    ("book/paper.md", "15.4%", "paper, Table 2"),
    ("book/paper.md", "15.3%", "paper, Table 2 and abstract"),
    ("book/intro.md", "15.3%", "paper, abstract (ILSVRC-2012 winning entry)"),
    ("book/intro.md", "26.2%", "paper, abstract (second-best entry)"),
    ("notebooks/01_convolution_arithmetic.ipynb", "1.7% and 1.2%", "paper, Section 3.2"),
    ("notebooks/01_convolution_arithmetic.ipynb", "0.4% and 0.3%", "paper, Section 3.4"),
    ("notebooks/04_dropout.ipynb", "0.4%", "paper, Section 3.4 (overlapping pooling, top-1)"),
    ("notebooks/04_dropout.ipynb", "0.3%", "paper, Section 3.4 (overlapping pooling, top-5)"),
    ("notebooks/06_lrn_vs_batchnorm.ipynb", "1.4% and 1.2%", "paper, Section 3.3"),
    ("notebooks/07_full_training.ipynb", "40.7%", "paper, Table 2 (one CNN, top-1 error)"),
    ("notebooks/07_full_training.ipynb", "18.2%", "paper, Table 2 (one CNN, top-5 error)"),
    # Formula constants and arithmetic on published constants.
    ("notebooks/06_lrn_vs_batchnorm.ipynb", "0.4%", "2^-7 / 2: bfloat16's rounding step near k = 2"),
    ("notebooks/03_relu.ipynb", "0.01%", "a^2 / (1 + a^2) for a = 0.01: arithmetic on a constant"),
    # Published hardware figures.
    ("notebooks/02_lenet_vs_alexnet.ipynb", "3.2 TFLOP/s",
     "two GTX 580s: NVIDIA's 512 cores x 1,544 MHz x 2 FLOPs per FMA, per card (cited)"),
]


def _strip_code(markdown: str) -> str:
    """Markdown without its code: fenced blocks (``` or ~~~) are dropped, except the directives that hold
    prose ({glossary}, {admonition}, {glue:figure}, ...), whose content is kept; inline code is blanked."""
    out, stack = [], []  # stack of open fences: (marker, is_prose)
    for line in markdown.splitlines():
        m = re.match(r"^\s*(```+|~~~+)\s*(\S*)", line)
        if m and stack and m.group(1) == stack[-1][0] and not m.group(2):
            stack.pop()  # the closing fence of the innermost block
            continue
        if m and (m.group(2) or not stack):
            info = m.group(2)
            prose = info.startswith("{") and not info.startswith(("{code-cell}", "{code}"))
            stack.append((m.group(1), prose))
            continue
        if all(prose for _, prose in stack):
            out.append(line)
    return re.sub(r"`[^`\n]*`", "`code`", "\n".join(out))


def prose_blocks() -> list[tuple[str, str, str]]:
    """(file, where, text) for every markdown cell of the notebooks and every page of book/."""
    blocks = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "markdown":
                text = _strip_code("".join(cell["source"]))
                blocks.append((path.relative_to(ROOT).as_posix(), f"cell {i}", text))
    for path in sorted((ROOT / "book").glob("*.md")):
        text = _strip_code(_strip_generated(path.read_text(encoding="utf-8")))
        blocks.append((path.relative_to(ROOT).as_posix(), "page", text))
    return blocks


def _strip_generated(text: str) -> str:
    """The page without the blocks a tool writes from committed measurements (book/intro.md's chapter
    times, from bench/results/notebook_times.json; tests/test_readme.py checks that they are current)."""
    return re.sub(r"<!-- notebook-times:start -->.*?<!-- notebook-times:end -->", "", text, flags=re.S)


def typed_measurements(blocks) -> list[tuple[str, str, str, str, str]]:
    """(file, where, kind, hit, context) for every hit that the allow-list does not cover."""
    allowed = {(f, hit) for f, hit, _ in ALLOWED}
    found = []
    for file, where, text in blocks:
        # A number written as "1.7% / 1.2%" or "1.4% and 1.2%" is one quotation: look at pairs first.
        covered: list[tuple[int, int]] = []
        for f, hit, _ in ALLOWED:
            if f == file:
                for m in re.finditer(re.escape(hit), text):
                    covered.append(m.span())
        for kind, pattern in PATTERNS.items():
            for m in pattern.finditer(text):
                if (file, m.group(0)) in allowed or any(a <= m.start() and m.end() <= b for a, b in covered):
                    continue
                context = text[max(0, m.start() - 60):m.end() + 20].replace("\n", " ")
                found.append((file, where, kind, m.group(0), context))
    return found


def test_the_scanner_finds_typed_measurements():
    # The shapes the test exists for, in a made-up paragraph, and numbers it must leave alone.
    text = ("The run reached 82.24% (+0.60 points) at 383 img/s, 308 GFLOP/s, 27.7 s per epoch, "
            "17.7 days in all, 2.3x faster; one epoch takes a quarter of an hour, on a machine with tens "
            "to hundreds of times the FLOP rate.")
    kinds = {kind for *_, kind, _hit, _ctx in typed_measurements([("x.md", "page", text)])}
    assert kinds == set(PATTERNS), sorted(set(PATTERNS) - kinds)
    harmless = ("A 5×5 kernel, 3 epochs of 128 images, 64-192-384-256-256 kernels, 25% training error, 2048 "
                "patches, two GTX 580s, agree on 1001 points, with $z = 3, s = 2$.")
    assert typed_measurements([("x.md", "page", harmless)]) == []
    fenced = "Prose.\n```python\nprint(f'{rate:.1f} img/s')  # 12.5 img/s\n```\nAnd `lr=0.5 s`."
    assert typed_measurements([("x.md", "page", _strip_code(fenced))]) == []
    directive = "```{glossary}\nterm\n  It took 12.5 s.\n```\nAfter 3.5 s."
    assert [hit for *_, hit, _ in typed_measurements([("x.md", "page", _strip_code(directive))])] == [
        "12.5 s", "3.5 s"]


def test_allow_list_entries_are_used_and_explained():
    blocks = prose_blocks()
    for file, hit, reason in ALLOWED:
        assert reason.strip(), f"allow-list entry {hit!r} in {file} has no reason"
        assert any(f == file and hit in text for f, _, text in blocks), (
            f"allow-list entry {hit!r} no longer occurs in {file}: remove it from ALLOWED")


def test_prose_has_no_hand_typed_measurements():
    found = typed_measurements(prose_blocks())
    report = "\n".join(f"{file} ({where}): {kind} {hit!r} in \"...{ctx}...\""
                       for file, where, kind, hit, ctx in found)
    assert not found, (
        "Hand-typed measured numbers in the prose. Refer to the cell's output instead (\"the table above\n"
        "shows\"), glue the number from a cell, or, for a quoted or cited number, add it to ALLOWED in\n"
        "tests/test_prose.py with its source:\n" + report)
