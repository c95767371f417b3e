"""``inferwatch baseline build`` and ``inferwatch check``: the one-shot commands for pipelines."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

import click

from inferwatch.middleware import MonitorError, Settings

from ._cli_options import Group, IsoTime, load_settings, open_store, option, setting_options

__all__ = ["NOTHING_CHECKED", "baseline", "check", "labels"]

NOTHING_CHECKED = 3
"""``check``'s exit status when the window held too few rows to judge (none, or under
``--min-rows``): a CI gate must not pass having checked nothing."""


@click.group(cls=Group)
def baseline() -> None:
    """Build baselines: the statistics that serving traffic is compared with."""


@baseline.command("build")
@click.argument("data")
@option("--out", default="baseline.json", metavar="FILE",
        help="Baseline file to write. [default: baseline.json]")  # fmt: skip
@option(
    "--label-column", default=None, metavar="COLUMN", help="Ground-truth column (stored apart)."
)
@option("--prediction-column", default=None, metavar="COLUMN",
        help="The model's prediction column.")  # fmt: skip
@option("--exclude", multiple=True, metavar="COLUMN", help="A column to leave out (repeatable).")
@option("--categorical", multiple=True, metavar="COLUMN",
        help="A column to treat as categorical (repeatable).")  # fmt: skip
@option("--boolean", "booleans", multiple=True, metavar="COLUMN",
        help="A column whose true/false, yes/no, y/n or 1/0 are booleans (repeatable); other "
        "CSV text stays text.")  # fmt: skip
@option("--bins", type=click.IntRange(2, 64), default=20, metavar="COUNT",
        help="Quantile bins per numeric feature. [default: 20]")  # fmt: skip
@option("--since", type=IsoTime(), default=None, help="With a DuckDB log file: start (UTC).")
@option("--until", type=IsoTime(), default=None, help="With a DuckDB log file: end (UTC).")
@option(
    "--attributions",
    default=None,
    metavar="PREFIX-OR-FILE",
    help="Training attributions (SHAP values and the like): a file with one column per feature, "
    "or the prefix of such columns in DATA (shap_ for shap_age).",
)
@option(
    "--importances",
    default=None,
    metavar="FILE",
    help="Feature importances: a JSON object or CSV rows of feature,importance; drifted "
    "features are ranked by them (by mean |attribution| without).",
)
def build(
    data: str,
    out: str,
    label_column: str | None,
    prediction_column: str | None,
    exclude: tuple[str, ...],
    categorical: tuple[str, ...],
    booleans: tuple[str, ...],
    bins: int,
    since: datetime | None,
    until: datetime | None,
    attributions: str | None,
    importances: str | None,
) -> None:
    """Summarize DATA (CSV, Parquet, JSON lines, or a DuckDB log file) into a baseline."""
    from inferwatch.middleware.baseline.build import build_baseline

    if not os.path.exists(data):
        raise click.UsageError(f"Bad value for DATA: no file at {data!r}.")
    time_range = None
    if since or until:
        time_range = (since or datetime(1970, 1, 1), until or datetime(9999, 1, 1))
    started = time.monotonic()

    def progress(line: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {line}", err=True)

    try:
        document = build_baseline(
            data,
            out=out,
            label_column=label_column,
            prediction_column=prediction_column,
            exclude=exclude,
            categorical=categorical,
            booleans=booleans,
            bins=bins,
            time_range=time_range,
            progress=progress,
            attributions=attributions,
            importances=importances,
        )
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{out}: {len(document.get('features', {}))} features, "
        f"{len(document.get('predictions', {}))} predictions, {document.get('rows')} rows, "
        f"{os.path.getsize(out):,} bytes"
    )


@click.command(cls=Group.command_class)
@setting_options(
    "baseline", "baselines", "db", "window", "min_rows", "attributions_field",
    "fleet_storage_options",
)  # fmt: skip
@option("--fleet", default=None, metavar="URL",
        help="Check every replica's summaries shipped under URL (a folder or s3://bucket/prefix; "
        "docs/fleet.md) instead of --db.")  # fmt: skip
@option("--by-replica", is_flag=True,
        help="With --fleet: each replica's verdict too, beside the merged one.")  # fmt: skip
@option("--model", default=None, metavar="NAME",
        help="Check only the requests whose path named model NAME, against its baseline in "
             "--baselines when given.")  # fmt: skip
@option("--until", type=IsoTime(), default=None,
        help="End of the window, ISO-8601 (UTC). [default: now]")  # fmt: skip
@option("--against", default=None, metavar="EARLIER",
        help="Compare with an earlier window instead of the baseline's counts, on its bins: "
             "7d-ago (as long as --window, 7 days earlier) or 30d@7d-ago.")  # fmt: skip
@option("--format", "output", type=click.Choice(["text", "json"]), default="text",
        help="text for people, json (the /drift report) for scripts. [default: text]")  # fmt: skip
def check(
    until: datetime | None,
    output: str,
    model: str | None,
    fleet: str | None,
    by_replica: bool,
    against: str | None,
    **values: str | None,
) -> None:
    """Check the logged traffic against a baseline once.

    Exit status: 0 all is well, 1 drift or skew found, 2 bad input, 3 nothing to check (fewer
    rows in the window than --min-rows, none included). While a collector holds the store, a
    consistent copy of it is checked. Windows of whole minutes are added up from the store's
    summaries (docs/summaries.md), so --window 7d costs what its minutes cost.
    """
    from inferwatch.middleware.baseline.build import load_baseline
    from inferwatch.middleware.drift.summary_check import parse_against

    settings = load_settings(values)
    try:
        earlier = parse_against(against)
    except ValueError as exc:
        raise click.UsageError(f"Bad value for --against: {exc}.") from exc
    if fleet is not None and earlier is not None:
        raise click.UsageError("Bad value for --against: not available with --fleet.")
    baseline_path = _baseline_of(settings, model)
    try:
        loaded = load_baseline(baseline_path)
    except MonitorError as exc:
        raise click.UsageError(f"Bad value for --baseline: {exc}.") from exc
    if fleet is not None:
        from ._cli_fleet import check_fleet

        report = check_fleet(
            fleet, settings, loaded, baseline_path, model=model, until=until, by_replica=by_replica
        )
    else:
        report = _store_report(settings, loaded, baseline_path, model, until, earlier)
    if model is not None:
        report["model"] = model
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_text(report))
        if fleet is not None:
            from ._cli_fleet import render_fleet

            click.echo(render_fleet(report))
    if report["drift_detected"] or report["skew_detected"]:
        sys.exit(1)
    if report["status"] == "insufficient_data":
        click.echo(
            f"Nothing to check: {report['window']['rows']} rows in the window, "
            f"{settings.min_rows} needed (--window, --min-rows).",
            err=True,
        )
        sys.exit(NOTHING_CHECKED)
    sys.exit(0)


def _store_report(
    settings: Settings,
    loaded: Any,
    baseline_path: str,
    model: str | None,
    until: datetime | None,
    earlier: Any,
) -> dict[str, Any]:
    """The drift report of the store at ``settings.db`` (a consistent copy while a collector
    holds it)."""
    from inferwatch.middleware.baseline.model_scope import scoped_cursors
    from inferwatch.middleware.collector.client import running_collector, snapshot
    from inferwatch.middleware.drift.summary_check import check_window

    with contextlib.ExitStack() as stack:
        db = settings.db
        collector = running_collector(db) if os.path.isfile(db) else None
        if collector is not None:  # it holds the file: check a consistent copy of it
            try:
                db = stack.enter_context(snapshot(collector))
            except MonitorError as exc:
                raise click.UsageError(f"Bad value for --db: {exc}") from exc
        store = open_store(db)
        try:
            report = check_window(
                scoped_cursors(store.cursor, model),
                loaded,
                model=model,
                window_s=settings.window,
                now=until,
                against=earlier,
                min_rows=settings.min_rows,
                baseline_path=baseline_path,
                attributions_field=settings.attributions_field,
            )
        finally:
            store.close()
    return report


def _baseline_of(settings: Settings, model: str | None) -> str:
    """The baseline file a check uses: the model's in ``baselines``, else ``baseline``."""
    from inferwatch.middleware.baseline.model_scope import baseline_files

    if model is None or not settings.baselines:
        if settings.baseline is None:
            raise click.UsageError(
                "Missing setting baseline: pass --baseline FILE or set INFERWATCH_BASELINE"
                " (or --baselines with --model)."
            )
        return settings.baseline
    try:
        files = baseline_files(settings.baselines)
    except (MonitorError, OSError) as exc:
        raise click.UsageError(f"Bad value for --baselines: {exc}.") from exc
    if model not in files:
        known = ", ".join(sorted(files)) or "none"
        raise click.UsageError(f"No baseline for model {model!r} in --baselines (models: {known}).")
    return files[model]


def render_text(report: dict) -> str:
    """A drift report as lines a person reads in a terminal."""
    window = report["window"]
    span = f"{window['rows']} rows, {window['start']} .. {window['end']}"
    lines = [f"status: {report['status']}  ({span})"]
    earlier = report.get("against")
    if earlier:
        how = "" if earlier.get("compared") else "; too few rows, compared with the baseline"
        lines.append(
            f"  against {earlier['rows']} rows, {earlier['start']} .. {earlier['end']}{how}"
        )
    for section in ("features", "prediction"):
        entries = sorted(
            report.get(section, {}).items(), key=lambda item: -(item[1].get("score") or 0)
        )
        for name, entry in entries:
            if entry.get("score") is None:
                continue
            mark = "DRIFT" if entry.get("drifted") else "ok   "
            lines.append(
                f"  {mark} {section[:7]:7} {name}: {entry.get('method')} {entry['score']:.3f} "
                f"(threshold {entry['threshold']:.3f})"
            )
    outliers, multivariate = report.get("outliers"), report.get("multivariate")
    if outliers and outliers.get("status") != "insufficient_data":
        mark = "ALERT" if outliers["detected"] else "ok   "
        lines.append(
            f"  {mark} outliers {outliers['count']} of {outliers['rows']} rows "
            f"(baseline share {outliers['expected_share']:.4f}, p {outliers['p_value']:.2g})"
        )
        for row in outliers.get("top", []):
            names = ", ".join(f["name"] for f in row["features"])
            lines.append(
                f"        {row['request_id']}[{row['row_index']}] {row['score']:.2f}: {names}"
            )
    if multivariate and multivariate.get("status") != "insufficient_data":
        mark = "DRIFT" if multivariate["drifted"] else "ok   "
        lines.append(
            f"  {mark} multivariate mean score {multivariate['mean_score']:.3f} "
            f"(band {multivariate['lower']:.3f} .. {multivariate['upper']:.3f})"
        )
    for name, entry in (report.get("attributions") or {}).get("features", {}).items():
        if entry.get("score") is not None:
            mark = "DRIFT" if entry["drifted"] else "ok   "
            lines.append(
                f"  {mark} attribution {name}: {entry['method']} {entry['score']:.3f} "
                f"(threshold {entry['threshold']:.3f}), mean |a| {entry['mean_abs']:.3g}"
            )
    for anomaly in report.get("schema_anomalies", []):
        lines.append(
            f"  SKEW  {anomaly['type']}: {anomaly['feature']} (share {anomaly.get('share')}) "
            f"{anomaly.get('detail') or ''}".rstrip()
        )
    return "\n".join(lines)


@click.group(cls=Group)
def labels() -> None:
    """Ground truth: labels joined with the predictions they answer."""


@labels.command("import")
@click.argument("file")
@setting_options("db")
def import_labels(file: str, db: str | None) -> None:
    """Import FILE (CSV, Parquet or JSON lines: request_id, index, label, timestamp).

    While a collector holds the store, the labels go through it.
    """
    from inferwatch.middleware.collector.client import import_labels as import_through
    from inferwatch.middleware.collector.client import running_collector

    settings = load_settings({"db": db})
    collector = running_collector(settings.db) if os.path.isfile(settings.db) else None
    if collector is not None:  # it holds the file: it imports them
        try:
            counts = import_through(collector, file)
        except MonitorError as exc:
            raise click.UsageError(str(exc)) from exc
        _report_labels(counts)
        return
    from inferwatch.middleware.evaluation.label_files import import_label_file

    store = open_store(settings.db, read_only=False)
    try:
        counts = import_label_file(store, file, progress=lambda line: click.echo(line, err=True))
    except MonitorError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        store.close()
    _report_labels(counts)


def _report_labels(counts: dict[str, int]) -> None:
    click.echo(
        f"{counts['accepted']} labels accepted, {counts['matched']} matched a captured "
        f"prediction, {counts['unmatched']} did not"
    )
