"""The ``inferwatch`` command line. It parses arguments and hands them over; nothing more."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from middleware import MonitorError, Settings
from middleware._settings import SETTING_FIELDS, parse_duration

from ._cli_checks import baseline, check, labels

__all__ = ["main", "settings_options"]


def settings_options(mode: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one ``--flag`` per setting of ``mode`` (``all`` settings plus the mode's own)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for spec in reversed(SETTING_FIELDS):
            if spec.metadata["modes"] not in {"all", mode}:
                continue
            flag = "--" + spec.name.replace("_", "-")
            env = "INFERWATCH_" + spec.name.upper()
            default = spec.default
            shown = (
                "none"
                if default is None
                else ",".join(default)
                if isinstance(default, tuple)
                else default
            )
            command = click.option(
                flag,
                spec.name,
                default=None,
                metavar=spec.metadata["kind"].upper(),
                help=f"{spec.metadata['help']} [env {env}; default {shown}]",
            )(command)
        return command

    return decorate


def load_settings(values: dict[str, Any]) -> Settings:
    """Settings from parsed flags; a bad value ends the program with one line."""
    known = {spec.name for spec in SETTING_FIELDS}
    try:
        return Settings.load({k: v for k, v in values.items() if k in known})
    except MonitorError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="inferwatch")
def main() -> None:
    """inferwatch: monitoring for self-hosted model endpoints."""


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time") from exc


@main.command()
@click.option("--db", "db", required=True, help="A log store file that no process has open.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder.")
@click.option("--since", default=None, help="ISO-8601 start time (UTC).")
@click.option("--until", default=None, help="ISO-8601 end time (UTC).")
@click.option(
    "--tables",
    default=None,
    metavar="A,B",
    help="Tables to write, comma-separated; default all: requests, features, labels, "
    "efficiency, resources, drift_reports, row_scores, alerts, alert_deliveries.",
)
def export(db: str, out: str, since: str | None, until: str | None, tables: str | None) -> None:
    """Write the log store's tables as Parquet files into OUT, one file per table.

    A running monitor holds its file; export from it with GET /export/TABLE.parquet instead.
    """
    from middleware._store import EXPORT_TABLES, Store

    chosen = list(EXPORT_TABLES) if tables is None else [t.strip() for t in tables.split(",")]
    unknown = [t for t in chosen if t not in EXPORT_TABLES]
    if unknown or not chosen:
        raise click.UsageError(
            f"--tables: no table {(unknown or [''])[0]!r}; choose from {', '.join(EXPORT_TABLES)}."
        )
    if not os.path.exists(db):
        raise click.UsageError(f"No log store at {db!r}.")
    try:
        store = Store(db, read_only=True)
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    os.makedirs(out, exist_ok=True)
    try:
        for table in dict.fromkeys(chosen):
            path = os.path.join(out, f"{table}.parquet")
            rows = store.export_parquet(table, path, _parse_time(since), _parse_time(until))
            click.echo(f"{path}: {rows} rows")
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


@main.command()
@settings_options("sidecar")
def sidecar(**values: Any) -> None:
    """Proxy a model server at --upstream URL, monitoring every request.

    The monitor API (/readyz, /health, /metrics, ...) answers on --admin-port.
    """
    from ._serve import serve

    try:
        status = serve(load_settings(values))
    except MonitorError as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(status)


@main.command()
@click.option("--duration", default=None, help="Exit after this long (e.g. 90s); default: Ctrl-C.")
@click.option("--phase", "phase", default="15s", show_default=True, help="Length of each phase.")
@click.option("--rate", default=15.0, show_default=True, help="Requests per second it sends.")
@click.option("--port", default=8000, show_default=True, help="Port of the sidecar's proxy.")
@click.option("--keep", is_flag=True, help="Keep the demo's folder (store, baseline, summary).")
def demo(duration: str | None, phase: str, rate: float, port: int, keep: bool) -> None:
    """Run a model server, the sidecar in front of it, and a day of traffic in minutes."""
    from ._demo import run_demo

    try:
        seconds = None if duration is None else parse_duration(duration)
        phase_seconds = parse_duration(phase)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(run_demo(seconds, phase_seconds, rate, port, keep))


main.add_command(baseline)
main.add_command(check)
main.add_command(labels)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
