"""The worker channel's options: read once from the settings, each under the setting's own name."""

from __future__ import annotations

import dataclasses

from inferwatch import Settings
from inferwatch.middleware.collector.options import ChannelOptions


def test_the_channel_options_carry_the_settings_they_name() -> None:
    settings = Settings.load(
        {"db": "/tmp/x.duckdb", "queue_size": 7, "health_window": "1m"}, environ={}
    )
    options = ChannelOptions.from_settings(settings)
    for spec in dataclasses.fields(ChannelOptions):
        assert getattr(options, spec.name) == getattr(settings, spec.name), spec.name
    assert (options.queue_size, options.health_window) == (7, 60.0)
