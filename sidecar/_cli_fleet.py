"""``inferwatch check --fleet`` and ``inferwatch export --to``: the fleet's side of the CLI."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import duckdb

from inferwatch.middleware import MonitorError, Settings

__all__ = ["check_fleet", "export_to"]


def check_fleet(
    url: str,
    settings: Settings,
    loaded: Any,
    baseline_path: str,
    *,
    model: str | None,
    until: datetime | None,
    by_replica: bool = False,
) -> dict[str, Any]:
    """The drift report of every replica's summaries under ``url`` for the window; with
    ``by_replica``, each replica's verdict too (``fleet.by_replica``).

    Closed hours are shipped as hour totals, so the window starts on the hour that holds its
    start. Sections that need raw rows (outliers, multivariate, attributions, a prediction
    compared as the argmax of probabilities) find none and say so.
    """
    from inferwatch.middleware.drift.report import run_check
    from inferwatch.middleware.fleet.layout import FleetStorage, storage_options
    from inferwatch.middleware.fleet.read import fleet_window
    from inferwatch.middleware.store.schema import STATEMENTS
    from inferwatch.middleware.summaries.spec import summary_spec
    from inferwatch.middleware.summaries.window import SummaryFigures

    end = _utc(until or datetime.now(UTC))
    start = (end - timedelta(seconds=settings.window)).replace(minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    try:
        storage = FleetStorage.open(url, storage_options(settings.fleet_storage_options))
        digest = summary_spec(loaded).digest
        window = fleet_window(storage, digest, start, end, model=model or "", by_replica=by_replica)
    except MonitorError as exc:
        raise click.UsageError(f"Bad value for --fleet: {exc}") from exc
    read_s = time.perf_counter() - started
    empty = duckdb.connect()  # the raw-row sections read an empty store: the fleet has no rows
    for statement in STATEMENTS:
        empty.execute(statement)

    def scored(merged: list[tuple[Any, ...]]) -> dict[str, Any]:
        return run_check(
            empty.cursor,
            loaded,
            window_s=(end - start).total_seconds(),
            now=end,
            min_rows=settings.min_rows,
            baseline_path=baseline_path,
            figures=lambda cursor, a, b: SummaryFigures(merged),
        )

    try:
        report = scored(window.merged)
        replicas = {}
        for name, merged in sorted(window.by_replica.items()):
            own = scored(merged)
            replicas[name] = {
                "status": own["status"],
                "rows": own["window"]["rows"],
                "drifted_features": own["drifted_features"],
            }
    finally:
        empty.close()
    report["fleet"] = {
        "url": url,
        "replicas": len(window.replicas),
        "replica_names": window.replicas,
        "other_baselines": window.other_baselines,
        "files": window.files,
        "read_s": round(read_s, 3),
    }
    if by_replica:
        report["fleet"]["by_replica"] = replicas
    return report


def render_fleet(report: dict[str, Any]) -> str:
    """The line a person reads under the report: how many replicas it merged."""
    fleet = report["fleet"]
    line = f"fleet: {fleet['replicas']} replicas, {fleet['files']} files ({fleet['url']})"
    if fleet["other_baselines"]:
        line += (
            f"; {len(fleet['other_baselines'])} replicas summarized another baseline and are "
            f"left out: {', '.join(fleet['other_baselines'][:5])}"
        )
    for name, own in (fleet.get("by_replica") or {}).items():
        drifted = ", ".join(own["drifted_features"]) or "none drifted"
        line += f"\n  replica {name}: {own['status']} ({own['rows']} rows; {drifted})"
    return line


def export_to(
    url: str,
    db: str,
    since: datetime | None,
    until: datetime | None,
    settings: Settings,
) -> None:
    """Write the store's summaries (and sampled raw rows with ``fleet_raw``) of [since, until)
    to ``url`` in the fleet's layout, as the collector ships them."""
    from inferwatch.middleware.fleet.layout import FleetStorage, storage_options
    from inferwatch.middleware.fleet.shipping import fleet_tables, table_files

    from ._cli_options import open_store

    replica = settings.replica or socket.gethostname()
    # whole hours from the start: a file holds its hour's every row, never a part from its start
    start = _utc(since or datetime(1970, 1, 1)).replace(minute=0, second=0, microsecond=0)
    end = _utc(until or datetime.now(UTC))
    storage = FleetStorage.open(url, storage_options(settings.fleet_storage_options))
    store = open_store(db)
    try:
        cursor = store.cursor()
        try:
            for table in fleet_tables(settings.fleet_raw):
                count = 0
                for path, data in table_files(
                    cursor, table, start, end, settings.fleet_raw, replica
                ):
                    storage.write(path, data)
                    count += 1
                click.echo(f"{storage.uri(table.name)}: {count} files")
        finally:
            cursor.close()
    finally:
        store.close()


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
