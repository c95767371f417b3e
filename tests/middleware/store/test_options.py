"""The store writer's options: read once from the settings, each under the setting's own name."""

from __future__ import annotations

import dataclasses

from inferwatch import Settings
from inferwatch.middleware.store.options import StoreOptions


def test_the_store_options_carry_the_settings_they_name() -> None:
    settings = Settings.load(
        {"db": "/tmp/x.duckdb", "db_memory": "64MiB", "db_threads": 3, "flush_interval": "2s",
         "retention": "1d", "max_db_bytes": "1GiB", "max_features": 7, "max_fields_per_row": 9,
         "redact": "ssn,email"},
        environ={},
    )  # fmt: skip
    options = StoreOptions.from_settings(settings)
    for spec in dataclasses.fields(StoreOptions):
        assert getattr(options, spec.name) == getattr(settings, spec.name), spec.name
    assert options.redact == ("ssn", "email")
    assert options.db_memory == 64 * 2**20 and options.retention == 86400.0
