"""``python -m middleware.collector``: the collector, as a worker starts it (``--auto``, settings
from the worker) or as ``inferwatch collector`` does (flags)."""

from __future__ import annotations

import json
import logging
import os
import sys

from .._settings import Settings
from .election import SETTINGS_ENV
from .process import run_collector


def main(argv: list[str]) -> int:
    if argv == ["--auto"]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        values = json.loads(os.environ.pop(SETTINGS_ENV, "{}"))
        return run_collector(Settings.load(values), auto=True)
    from sidecar._cli import main as cli

    return cli(["collector", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
