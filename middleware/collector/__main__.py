"""``python -m inferwatch.middleware.collector``: the collector, as a worker starts it (``--auto``,
settings from the worker), as its standby (``--standby``, see ``standby``) or as ``inferwatch
collector`` does (flags)."""

from __future__ import annotations

import time

_STARTED = time.monotonic()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

from ..settings import Settings  # noqa: E402
from .election import SETTINGS_ENV, claim_store  # noqa: E402
from .paths import CollectorPaths  # noqa: E402


def _load_collector() -> Callable[..., int]:
    from .process import run_collector  # with it the API, the pod's engine and their imports

    return run_collector


def main(argv: list[str]) -> int:
    if argv in (["--auto"], ["--standby"]):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per metadata lookup
        settings = Settings.load(json.loads(os.environ.pop(SETTINGS_ENV, "{}")))
        if argv == ["--standby"]:
            from .standby import stand_by

            return stand_by(settings, _STARTED, _load_collector)
        # Lock and sockets first: workers reconnect while the engine's modules are imported.
        claim = claim_store(CollectorPaths.for_db(settings.db))
        if claim is None:
            logging.getLogger("inferwatch").warning(
                "inferwatch: a collector already runs for %s", settings.db
            )
            return 0
        from .process import run_collector

        return run_collector(settings, auto=True, claim=claim, started=_STARTED)
    from inferwatch.sidecar._cli import main as cli

    return cli(["collector", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
