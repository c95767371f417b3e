"""The alerts' options: every ``alert_*`` setting, read once from the settings object."""

from __future__ import annotations

import dataclasses

from inferwatch import Settings
from inferwatch.middleware.alerts.options import AlertOptions


def test_the_alert_options_are_every_alert_setting() -> None:
    settings = Settings.load(
        {"alert_for": 5, "alert_latency": "250ms", "alert_email_to": "a@x.org,b@x.org",
         "alert_smtp_password": "secret", "alert_rules": "-latency"},
        environ={},
    )  # fmt: skip
    options = AlertOptions.from_settings(settings)
    owned = {spec.name for spec in dataclasses.fields(AlertOptions)}
    assert owned == {spec.name for spec in dataclasses.fields(Settings)} & owned
    assert owned == {name for name in settings.public() if name.startswith("alert_")}
    for name in owned:
        assert getattr(options, name) == getattr(settings, name), name
    assert options.alert_latency == 0.25 and options.alert_email_to == ("a@x.org", "b@x.org")
    assert "secret" not in repr(options)
