"""The ``inferwatch`` command line. It parses arguments and hands them over; nothing more."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import datetime
from typing import Any

import click

from inferwatch.middleware import MonitorError

from ._cli_checks import baseline, check, labels
from ._cli_options import (
    Duration,
    Group,
    IsoTime,
    load_settings,
    open_store,
    option,
    setting_options,
    settings_options,
)

__all__ = ["main", "settings_options"]

_RATE = click.FloatRange(min=0.1)
_RATE.name = "number"  # "'x' is not a valid number", not "... a valid float range"


@click.group(
    cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="inferwatch")
def main() -> None:
    """inferwatch: monitoring for self-hosted model endpoints.

    Exit status: 0 success, 1 drift or skew found (check), 2 bad input (one line on stderr),
    3 nothing to check (check).
    """


@main.command()
@setting_options("db", "replica", "fleet_raw", "fleet_storage_options")
@option("--out", "out", default=None, type=click.Path(file_okay=False), level="required",
        help="Folder the Parquet files are written into.")  # fmt: skip
@option("--to", "to", default=None, metavar="URL", level="required",
        help="Instead of --out: write the summaries (and, with --fleet-raw, sampled raw rows) "
        "to URL in the fleet's Hive layout, as collectors ship them (docs/fleet.md).")  # fmt: skip
@option("--since", type=IsoTime(), default=None, help="Start time, ISO-8601 (UTC).")
@option("--until", type=IsoTime(), default=None, help="End time, ISO-8601 (UTC).")
@option("--tables", default=None, metavar="A,B",
        help="Tables to write, comma-separated. [default: all of them]")  # fmt: skip
def export(
    out: str | None,
    to: str | None,
    since: datetime | None,
    until: datetime | None,
    tables: str | None,
    **values: Any,
) -> None:
    """Write the log store's tables as Parquet files into OUT, one file per table, or its
    summaries to a fleet URL (--to).

    While a collector holds the store, a consistent copy of it is exported.
    """
    from inferwatch.middleware.collector.client import running_collector, snapshot
    from inferwatch.middleware.store.database import EXPORT_TABLES

    if (out is None) == (to is None):
        raise click.UsageError("Pass one of --out FOLDER or --to URL.")

    chosen = list(EXPORT_TABLES) if tables is None else [t.strip() for t in tables.split(",")]
    unknown = [t for t in chosen if t not in EXPORT_TABLES]
    if unknown or not chosen:
        raise click.UsageError(
            f"Bad value for --tables: no table {(unknown or [''])[0]!r}; "
            f"choose from {', '.join(EXPORT_TABLES)}."
        )
    settings = load_settings(values)
    collector = running_collector(settings.db) if os.path.isfile(settings.db) else None
    try:
        with contextlib.ExitStack() as stack:
            db = settings.db
            if collector is not None:  # the collector holds the file: export a copy of it
                db = stack.enter_context(snapshot(collector))
            if to is not None:
                from ._cli_fleet import export_to

                export_to(to, db, since, until, settings)
            else:
                _export(db, out or "", since, until, chosen)
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from exc


def _export(
    db: str, out: str, since: datetime | None, until: datetime | None, chosen: list[str]
) -> None:
    store = open_store(db)
    os.makedirs(out, exist_ok=True)
    try:
        for table in dict.fromkeys(chosen):
            path = os.path.join(out, f"{table}.parquet")
            rows = store.export_parquet(table, path, since, until)
            click.echo(f"{path}: {rows} rows")
    finally:
        store.close()


@main.command()
@settings_options("sidecar", required=("upstream",))
def sidecar(**values: Any) -> None:
    """Proxy a model server at --upstream URL, monitoring every request.

    The monitor API (/readyz, /health, /metrics, ...) answers on --admin-port.
    """
    from ._serve import serve

    settings = load_settings(values, required=("upstream",))
    try:
        status = serve(settings)
    except MonitorError as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(status)


@main.command()
@option("--admin-port", "collector_port", type=click.IntRange(0, 65535), default=None,
        metavar="PORT",
        help="Also serve the monitor API on this TCP port (it always answers on "
        "<db>.api.sock).")  # fmt: skip
@option("--admin-host", "collector_host", default="0.0.0.0", metavar="ADDRESS",
        help="Address of that port. [default: 0.0.0.0]")  # fmt: skip
@settings_options("middleware")
def collector(collector_port: int | None, collector_host: str, **values: Any) -> None:
    """Run the collector of --db: the one process that writes the log store.

    Every worker of the app (MonitorMiddleware with the same db) hands its requests to it over
    <db>.sock. Without this command the first worker starts one; one started here runs until
    SIGTERM and is used by the workers, never duplicated.
    """
    import logging

    from inferwatch.middleware.collector.process import run_collector

    settings = load_settings(values)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    status = run_collector(settings, admin_host=collector_host, admin_port=collector_port)
    if status:
        raise click.ClickException(f"A collector already runs for {settings.db!r}.")


@main.command()
@option("--duration", type=Duration(), default=None,
        help="Exit after this long (e.g. 90s). [default: until Ctrl-C]")  # fmt: skip
@option("--phase", type=Duration(), default="15s", help="Length of each phase. [default: 15s]")
@option("--rate", type=_RATE, default=15.0, metavar="NUMBER",
        help="Requests per second it sends. [default: 15]")  # fmt: skip
@setting_options("port")
@option("--keep", is_flag=True, help="Keep the demo's folder (store, baseline, summary).")
def demo(duration: float | None, phase: float, rate: float, port: int | None, keep: bool) -> None:
    """Run a model server, the sidecar in front of it, and a day of traffic in minutes."""
    from ._demo import run_demo

    sys.exit(run_demo(duration, phase, rate, load_settings({"port": port}).port, keep))


main.add_command(baseline)
main.add_command(check)
main.add_command(labels)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
