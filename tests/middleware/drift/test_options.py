"""The drift check's options: read once from the settings, each under the setting's own name."""

from __future__ import annotations

import dataclasses

from inferwatch import Settings
from inferwatch.middleware.drift.options import CheckOptions


def test_the_check_options_carry_the_settings_they_name() -> None:
    settings = Settings.load(
        {"baseline": "/tmp/b.json", "window": "2h", "max_window_rows": 500, "min_rows": 9,
         "prediction_output": "scores", "attributions_field": "shap"},
        environ={},
    )  # fmt: skip
    options = CheckOptions.from_settings(settings)
    for spec in dataclasses.fields(CheckOptions):
        assert getattr(options, spec.name) == getattr(settings, spec.name), spec.name
    assert (options.window, options.min_rows) == (7200.0, 9)
