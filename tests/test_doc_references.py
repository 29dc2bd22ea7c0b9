"""Every `README "Section"` / `docs/RESULTS.md "Section"` reference in the project names a place that exists.

Code comments, params, profiles and benchmarks justify a setting by pointing at the
measurement behind it. When the README's lab notebook moved to docs/RESULTS.md, two of
those pointers turned out to name no section at all; this keeps them resolvable.
A name resolves when the file has a heading, a bold paragraph start or a bullet
that begins with it (a reference may shorten a long title: "Training length" for
"Training length at ART's budget"). The README's results summary names
docs/RESULTS.md's sections in plain quotes; those are checked the same way.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = {"README": ROOT / "README.md", "docs/RESULTS.md": ROOT / "docs" / "RESULTS.md"}
# where references live: everything a user reads beside the two documents, and the documents themselves
SOURCES = ["src", "benchmarks", "profiles", "tests", "params.yaml", "dvc.yaml", "Makefile", "README.md", "docs/RESULTS.md"]
REFERENCE = re.compile(r"""(README|docs/RESULTS\.md),?\s+(?:"([^"\n]+)"|'([^'\n]+)')""")


def section_starts(text: str) -> list[str]:
    """The text that opens each heading, bold paragraph and bullet, whitespace collapsed."""
    flat = re.sub(r"\s+", " ", text)
    starts = re.findall(r"(?:^|\s)#+ (.{1,120})", text, flags=re.MULTILINE)
    starts += re.findall(r"\*\*(.{1,120})", flat)
    starts += re.findall(r"(?:^|\n)- (.{1,120})", text)
    return [re.sub(r"\s+", " ", start).strip() for start in starts]


@cache  # each document is read once for all the tests
def document_starts(document: str) -> list[str]:
    return section_starts(DOCUMENTS[document].read_text(encoding="utf-8"))


def resolves(name: str, starts: list[str]) -> bool:
    return any(start.startswith(name) for start in starts)


@cache  # read once for both documents' tests
def references() -> list[tuple[str, str, str]]:
    """(where, document, section name) for every reference in the sources."""
    found = []
    for source in SOURCES:
        path = ROOT / source
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.suffix not in {".py", ".yaml", ".md", ""} or not file.is_file() or file == Path(__file__):
                continue
            text = file.read_text(encoding="utf-8", errors="replace")
            for match in REFERENCE.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{file.relative_to(ROOT)}:{line}", match.group(1), match.group(2) or match.group(3)))
    return found


def test_the_checker_finds_references_and_tells_a_missing_section():
    starts = section_starts("# Title\n\n**A bold start** of a paragraph\n\n- A bullet:\n  wrapped\n### Training length at ART's budget\n")
    assert resolves("A bold start", starts) and resolves("A bullet", starts) and resolves("Training length", starts)
    assert not resolves("Converse questions in one batch", starts)
    assert REFERENCE.findall('x (README "Metrics") y; docs/RESULTS.md \'A smaller model\'') == [
        ("README", "Metrics", ""),
        ("docs/RESULTS.md", "", "A smaller model"),
    ]


def test_the_project_has_references_to_check():
    documents = {document for _, document, _ in references()}
    assert documents == {"README", "docs/RESULTS.md"}


@pytest.mark.parametrize("document", sorted(DOCUMENTS))
def test_every_reference_names_a_section_of_its_document(document):
    starts = document_starts(document)
    missing = [f"{where}: {document} \"{name}\"" for where, target, name in references() if target == document and not resolves(name, starts)]
    assert not missing, "references to no section:\n" + "\n".join(missing)


# quoted words of the README's results summary that are not section names: answers, a phrase, a question
SUMMARY_QUOTES_NOT_SECTIONS = {"...", "Yes", "No", "balanced below random", "Where is the {a} relative to the {b}?"}


def summary_quotes() -> list[str]:
    """Every "..." in the README's results summary, outside code spans that hold a shell command."""
    readme = DOCUMENTS["README"].read_text(encoding="utf-8")
    summary = readme[readme.index("## Results of the embedded default") : readme.index("## What reproduces where")]
    flat = re.sub(r"`[^`]*`", lambda span: "" if '"' in span.group() else span.group(), re.sub(r"\s+", " ", summary))
    return re.findall(r'"([^"]+)"', flat)


def test_the_readme_summary_quotes_sections_that_exist():
    # the summary says "Section names quoted below are its [docs/RESULTS.md's] sections"
    starts = document_starts("docs/RESULTS.md") + document_starts("README")  # README: "What reproduces where" (below)
    quotes = [quote for quote in summary_quotes() if quote not in SUMMARY_QUOTES_NOT_SECTIONS]
    assert len(quotes) >= 15, quotes  # the checker found the summary's references
    missing = [quote for quote in quotes if not resolves(quote, starts)]
    assert not missing, f"README results summary quotes no section: {missing}"
