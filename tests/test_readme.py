from __future__ import annotations

import re
from pathlib import Path

from inferwatch.middleware.settings import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_is_generated_from_the_settings_object() -> None:
    text = README.read_text()
    match = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert match, "README.md lacks the settings markers"
    assert match.group(1) == settings_table(), (
        "README's settings table is stale: "
        "run python -m inferwatch.middleware.settings --write-readme"
    )


def test_readme_starts_with_the_demo_and_the_tests() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert "inferwatch demo" in blocks[0]
    assert "pytest" in blocks[1]


def test_every_relative_link_in_the_docs_names_a_file_that_exists() -> None:
    root = README.parent
    pages = [README, root / "CHANGELOG.md", *sorted((root / "docs").glob("*.md"))]
    pages += sorted((root / "examples").glob("*/README.md"))
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path, _, anchor = target.partition("#")
            if re.match(r"[a-z]+:", path):
                continue
            linked = (page.parent / path) if path else page
            if not linked.exists():
                missing.append(f"{page.relative_to(root)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                missing.append(f"{page.relative_to(root)}: {target} (no such heading)")
    assert missing == []


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, dashes."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
