from __future__ import annotations

import re
from pathlib import Path

from middleware._settings import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_is_generated_from_the_settings_object() -> None:
    text = README.read_text()
    match = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert match, "README.md lacks the settings markers"
    assert match.group(1) == settings_table(), (
        "README's settings table is stale: run python -m middleware._settings --write-readme"
    )


def test_readme_starts_with_the_demo_and_the_tests() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert "inferwatch demo" in blocks[0]
    assert "pytest" in blocks[1]
