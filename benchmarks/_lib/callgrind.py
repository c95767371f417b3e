"""Reading what ``valgrind --tool=callgrind`` wrote."""

from __future__ import annotations

import re
from pathlib import Path

_TOTAL = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


def total_instructions(dump: Path) -> int | None:
    """The instructions a callgrind output file counted in all, or None if it holds no total."""
    found = _TOTAL.search(dump.read_text())
    return int(found.group(1)) if found else None
