"""The README's and docs' links stay inside the repository and lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives `page` (lower case, punctuation dropped, spaces as -)."""
    headings = re.findall(
        r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M), re.M
    )
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken(page: Path) -> list[str]:
    """The links of `page` that leave the repository or lead to no file or heading."""
    bad = []
    for target in LINK.findall(page.read_text()):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        outside = "://" in target or not dest.is_relative_to(ROOT)
        if outside or not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(target)  # a heading that was renamed or removed
    return bad


def test_the_pages_have_links() -> None:
    """The link pattern finds the README's links to docs/, so the check below cannot pass empty."""
    assert "docs/flagger.md" in LINK.findall((ROOT / "README.md").read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(page: Path) -> None:
    """Every link of the page is a file of the repository (and a heading of it, with #)."""
    assert broken(page) == []
