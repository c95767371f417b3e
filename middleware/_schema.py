"""The log store's tables: one place that says what is on disk.

Times are UTC ``TIMESTAMP`` values. Feature values are stored in long form, one row per
(request, instance, role, name), so that a value of an unexpected type keeps its own type and a
schema change upstream never needs ``ALTER TABLE``. docs/store.md describes each column.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "STATEMENTS"]

SCHEMA_VERSION = 1

STATEMENTS: tuple[str, ...] = (
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
        output_rows INTEGER
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
    CREATE TABLE IF NOT EXISTS features (
        ts TIMESTAMP NOT NULL,
        request_id VARCHAR NOT NULL,
        row_index INTEGER NOT NULL,
        role VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        num DOUBLE,
        str VARCHAR
    )
    """,
)
