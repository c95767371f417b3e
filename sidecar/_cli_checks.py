"""``inferwatch baseline build`` and ``inferwatch check``: the one-shot commands for pipelines."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime

import click

from middleware import MonitorError
from middleware._settings import parse_duration

__all__ = ["baseline", "check", "labels"]


@click.group()
def baseline() -> None:
    """Build baselines: the statistics that serving traffic is compared with."""


@baseline.command("build")
@click.argument("data")
@click.option("--out", default="baseline.json", show_default=True, help="Baseline file to write.")
@click.option("--label-column", default=None, help="Ground-truth column (stored apart).")
@click.option("--prediction-column", default=None, help="The model's prediction column.")
@click.option("--exclude", multiple=True, help="A column to leave out (repeatable).")
@click.option("--categorical", multiple=True, help="A column to treat as categorical (repeatable).")
@click.option(
    "--boolean",
    "booleans",
    multiple=True,
    help="A column whose true/false, yes/no, y/n or 1/0 are booleans (repeatable); other CSV "
    "text stays text.",
)
@click.option("--bins", default=20, show_default=True, help="Quantile bins per numeric feature.")
@click.option("--since", default=None, help="With a DuckDB log file: ISO-8601 start (UTC).")
@click.option("--until", default=None, help="With a DuckDB log file: ISO-8601 end (UTC).")
@click.option(
    "--attributions",
    default=None,
    metavar="PREFIX-OR-FILE",
    help="Training attributions (SHAP values and the like): a file with one column per feature, "
    "or the prefix of such columns in DATA (shap_ for shap_age).",
)
@click.option(
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
    since: str | None,
    until: str | None,
    attributions: str | None,
    importances: str | None,
) -> None:
    """Summarize DATA (CSV, Parquet, JSON lines, or a DuckDB log file) into a baseline."""
    from middleware._baseline import build_baseline

    if not os.path.exists(data):
        raise click.UsageError(f"No file at {data!r}.")
    time_range = None
    if since or until:
        try:
            time_range = (
                datetime.fromisoformat(since) if since else datetime(1970, 1, 1),
                datetime.fromisoformat(until) if until else datetime(9999, 1, 1),
            )
        except ValueError as exc:
            raise click.UsageError(f"--since/--until: {exc}.") from exc
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


@click.command()
@click.option("--db", required=True, help="The DuckDB log store (no other process may hold it).")
@click.option("--baseline", "baseline_path", required=True, help="The baseline file.")
@click.option("--window", default="1h", show_default=True, help="Traffic to check, back from now.")
@click.option("--until", default=None, help="ISO-8601 end of the window (UTC); default now.")
@click.option("--min-rows", default=100, show_default=True, help="Fewest rows for a verdict.")
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--attributions-field",
    default=None,
    help="Output field that holds per-feature attributions (as the setting of that name).",
)
def check(
    db: str,
    baseline_path: str,
    window: str,
    until: str | None,
    min_rows: int,
    output: str,
    attributions_field: str | None,
) -> None:
    """Check the logged traffic against a baseline once.

    Exits 0 when all is well, 1 when drift or skew is found, 2 on bad input.
    """
    from middleware._baseline import load_baseline
    from middleware._drift import run_check
    from middleware._store import Store

    try:
        window_s = parse_duration(window)
        end = datetime.fromisoformat(until) if until else None
        if not os.path.exists(db):
            raise MonitorError(f"No log store at {db!r}.")
        loaded = load_baseline(baseline_path)
        store = Store(db, read_only=True)
    except (MonitorError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    try:
        report = run_check(
            store.cursor,
            loaded,
            window_s=window_s,
            now=end,
            min_rows=min_rows,
            baseline_path=baseline_path,
            attributions_field=attributions_field,
        )
    finally:
        store.close()
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_text(report))
    sys.exit(1 if report["drift_detected"] or report["skew_detected"] else 0)


def render_text(report: dict) -> str:
    """A drift report as lines a person reads in a terminal."""
    window = report["window"]
    span = f"{window['rows']} rows, {window['start']} .. {window['end']}"
    lines = [f"status: {report['status']}  ({span})"]
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


@click.group()
def labels() -> None:
    """Ground truth: labels joined with the predictions they answer."""


@labels.command("import")
@click.argument("file")
@click.option("--db", required=True, help="The DuckDB log store (stop the monitor first).")
def import_labels(file: str, db: str) -> None:
    """Import FILE (CSV, Parquet or JSON lines: request_id, index, label, timestamp)."""
    from middleware._label_files import import_label_file
    from middleware._store import Store

    try:
        if not os.path.exists(db):
            raise MonitorError(f"No log store at {db!r}.")
        store = Store(db)
    except MonitorError as exc:
        click.echo(
            f"Error: {exc} A running monitor holds its file: stop it, or POST the labels.",
            err=True,
        )
        sys.exit(2)
    try:
        counts = import_label_file(store, file, progress=lambda line: click.echo(line, err=True))
    except MonitorError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    finally:
        store.close()
    click.echo(
        f"{counts['accepted']} labels accepted, {counts['matched']} matched a captured "
        f"prediction, {counts['unmatched']} did not"
    )
