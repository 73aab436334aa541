"""README.md and docs/ are self-contained: no reference to a path outside the repository, and every repository
path or link they name exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# what a published clone does not have: the design notes and fixtures of the machine the toolkit was built on
OUTSIDE = re.compile(r"\.\./shared|\bshared/(fixtures|reference|vendor)|DESIGN\.md|/work/|/root/")
# `path` in backticks that names a file or folder of the repository
REPO_PATH = re.compile(r"`((?:docs|tests|tools|ssl_eq|\.ci)/[^`\s]*|[A-Z]+\.md|Makefile|pyproject\.toml)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"[<*{]")


def names(doc: Path) -> str:
    return str(doc.relative_to(REPO))


@pytest.mark.parametrize("doc", DOCS, ids=names)
def test_no_reference_leaves_the_repository(doc):
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        assert not OUTSIDE.search(line), f"{names(doc)}:{n} points outside the repository: {line.strip()}"
        for target in re.findall(r"(?:\.\./)+[\w./-]*", line):  # relative paths must stay inside
            assert (doc.parent / target).resolve().is_relative_to(REPO), f"{names(doc)}:{n}: {target} leaves it"


@pytest.mark.parametrize("doc", DOCS, ids=names)
def test_every_repository_path_and_link_exists(doc):
    text = doc.read_text()
    for path in REPO_PATH.findall(text):
        if not PLACEHOLDER.search(path):
            assert (REPO / path.rstrip("/")).exists(), f"{names(doc)} names {path}, which does not exist"
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+://|#", target):
            resolved = (doc.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(REPO) and resolved.exists(), f"{names(doc)} links to missing {target}"


def test_the_docs_that_readme_relies_on_are_in_the_repository():
    readme = (REPO / "README.md").read_text()
    for doc in ("docs/scene.md", "docs/reference/sie.md", "docs/reference/seq-jepa.md", "docs/architecture.md"):
        assert f"`{doc}" in readme and (REPO / doc).is_file()
    assert "(`tests/data/blender-3diebench`)" in readme and (REPO / "tests/data/blender-3diebench/mug.obj").is_file()
