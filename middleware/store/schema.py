"""The log store's tables: one place that says what is on disk.

Times are UTC ``TIMESTAMP`` values. Feature values are stored in long form, one row per
(request, instance, role, name), so that a value of an unexpected type keeps its own type and a
schema change upstream never needs ``ALTER TABLE``. docs/store.md describes each column.

The ``features`` view is what readers query. Underneath, ``feature_values`` holds each value
with an integer ``column_id`` in place of its role, name and type, which ``feature_columns``
spells out: writing three short strings per value was about 40% of the cost of storing it.
"""

from __future__ import annotations

__all__ = [
    "FEATURES_VIEW",
    "ROLE_CODES",
    "SCHEMA_VERSION",
    "STATEMENTS",
    "TABLES",
    "TYPE_CODES",
    "UPGRADES",
    "column_id_sql",
]

# A column id is name index * 8 + type code * 2 + role code: the writer computes it with array
# arithmetic from one dictionary lookup per value, and a name keeps its index for every type.
ROLE_CODES = {"input": 0, "output": 1}
TYPE_CODES = {"number": 0, "boolean": 1, "string": 2, "null": 3}

FEATURES_VIEW = """
    CREATE OR REPLACE VIEW features AS
    SELECT v.ts, v.request_id, v.row_index, c.role, c.name, c.type, v.num, v.str, c.model
    FROM feature_values v JOIN feature_columns c ON c.id = v.column_id
"""
UPGRADES: tuple[str, ...] = (
    # the model a request path named (``/v2/models/{name}/infer``); NULL where none
    "ALTER TABLE requests ADD COLUMN IF NOT EXISTS model VARCHAR",
    "ALTER TABLE feature_columns ADD COLUMN IF NOT EXISTS model VARCHAR",
)
"""Columns added since schema 2, for stores made before them: run after ``STATEMENTS``."""


def column_id_sql(index: str, role: str, kind: str) -> str:
    """SQL for the column id of name index ``index``, role ``role`` and type ``kind``."""
    types = " ".join(f"WHEN '{k}' THEN {v}" for k, v in TYPE_CODES.items())
    roles = " ".join(f"WHEN '{k}' THEN {v}" for k, v in ROLE_CODES.items())
    return f"({index}) * 8 + (CASE {kind} {types} END) * 2 + (CASE {role} {roles} END)"


SCHEMA_VERSION = 2

TABLES: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS inferwatch_meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS requests (
        ts TIMESTAMP NOT NULL,
        request_id VARCHAR NOT NULL,
        method VARCHAR,
        route VARCHAR,
        status SMALLINT,
        latency_ms DOUBLE,
        ttfb_ms DOUBLE,
        request_bytes BIGINT,
        response_bytes BIGINT,
        error VARCHAR,
        input_status VARCHAR,
        output_status VARCHAR,
        input_rows INTEGER,
        output_rows INTEGER,
        model VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS efficiency (
        ts TIMESTAMP NOT NULL,
        interval_s DOUBLE,
        route VARCHAR,
        requests BIGINT,
        errors BIGINT,
        p50_ms DOUBLE,
        p95_ms DOUBLE,
        p99_ms DOUBLE,
        max_ms DOUBLE,
        ttfb_p50_ms DOUBLE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS resources (
        ts TIMESTAMP NOT NULL,
        process_cpu_percent DOUBLE,
        process_rss_bytes BIGINT,
        system_cpu_percent DOUBLE,
        system_memory_used_percent DOUBLE,
        cgroup_memory_bytes BIGINT,
        cgroup_memory_max_bytes BIGINT,
        gpu_utilization_percent DOUBLE,
        gpu_memory_used_bytes BIGINT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS labels (
        request_id VARCHAR NOT NULL,
        row_index INTEGER NOT NULL,
        type VARCHAR NOT NULL,
        num DOUBLE,
        str VARCHAR,
        label_ts TIMESTAMP,
        received_at TIMESTAMP NOT NULL,
        PRIMARY KEY (request_id, row_index)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS alerts (
        ts TIMESTAMP NOT NULL,
        id VARCHAR NOT NULL,
        episode VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        severity VARCHAR NOT NULL,
        since TIMESTAMP NOT NULL,
        duration_s DOUBLE NOT NULL,
        summary VARCHAR NOT NULL,
        details VARCHAR NOT NULL,
        value DOUBLE,
        threshold DOUBLE,
        worst VARCHAR,
        source VARCHAR NOT NULL,
        links VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS alert_deliveries (
        ts TIMESTAMP NOT NULL,
        event_id VARCHAR NOT NULL,
        channel VARCHAR NOT NULL,
        outcome VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        error VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS drift_reports (
        ts TIMESTAMP NOT NULL,
        status VARCHAR NOT NULL,
        report VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS feature_columns (
        id INTEGER PRIMARY KEY,
        role VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        model VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS feature_values (
        ts TIMESTAMP NOT NULL,
        request_id VARCHAR NOT NULL,
        row_index INTEGER NOT NULL,
        column_id INTEGER NOT NULL,
        num DOUBLE,
        str VARCHAR
    )
    """,
    # One row per scored input row: its outlier score against the baseline's model.
    """
    CREATE TABLE IF NOT EXISTS row_scores (
        ts TIMESTAMP NOT NULL,
        request_id VARCHAR NOT NULL,
        row_index INTEGER NOT NULL,
        score DOUBLE NOT NULL,
        outlier BOOLEAN NOT NULL
    )
    """,
)
# Per-minute (later per-hour) summaries of captured rows, which checks add up instead of reading
# rows: docs/summaries.md says what each row holds and how rows merge.
SUMMARY_TABLES: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS summaries (
        minute TIMESTAMP NOT NULL,
        step_s INTEGER NOT NULL,
        model VARCHAR NOT NULL,
        baseline VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        what VARCHAR NOT NULL,
        key VARCHAR,
        n BIGINT NOT NULL,
        total DOUBLE,
        squares DOUBLE,
        low DOUBLE,
        high DOUBLE
    )
    """,
    # when the writer began to fold rows for a (model, baseline): earlier minutes are not whole
    """
    CREATE TABLE IF NOT EXISTS summary_baselines (
        model VARCHAR NOT NULL,
        baseline VARCHAR NOT NULL,
        since TIMESTAMP NOT NULL,
        PRIMARY KEY (model, baseline)
    )
    """,
)
TABLES = (*TABLES, *SUMMARY_TABLES)
STATEMENTS: tuple[str, ...] = (*TABLES, FEATURES_VIEW)
"""What a new store is made of: the tables, then the ``features`` view over them."""
