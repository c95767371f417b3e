"""One settings object, three spellings: keyword, command-line flag and environment variable.

Precedence is keyword (or flag), then ``INFERWATCH_<NAME>``, then the default. Every field carries
its kind and help text so that the CLI options and the README's settings table are generated
from this one place.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import MonitorError

__all__ = [
    "SETTING_FIELDS",
    "Settings",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
    "settings_table",
    "shown_default",
]

ENV_PREFIX = "INFERWATCH_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


MAX_DURATION_S = 100 * 365.25 * 86400.0
"""The longest duration a setting or a query takes: beyond it, times before or after now
overflow what a datetime holds."""


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``90s``, ``5m``, ``1h``, ``7d``, ``250ms`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 90s, 5m, 1h or 7d")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration of zero or more seconds")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than 100 years")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes from ``512KiB``, ``1MiB``, ``2GB`` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a size such as 512KiB, 1MiB or 2GB")
        unit = (match.group(2) or "b").lower()
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"{value!r} is not a size of zero or more bytes")
    return size


def format_duration(seconds: float) -> str:
    """A duration as users write it: ``1m``, ``7d``, ``90s``, ``250ms``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if 0 < seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """A size as users write it: ``1MiB``, ``2GiB``, ``64KiB`` or plain bytes."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _SIZE_UNITS[unit.lower()]
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def _parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{value!r} is not true or false")


def _parse_names(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(name.strip() for name in value if name.strip())


def _parse_fraction(value: str | float) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value!r} is not between 0 and 1")
    return number


def _parse_positive_int(value: str | int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    number = int(value)
    if number < 1:
        raise ValueError(f"{value!r} is not a whole number of 1 or more")
    return number


def _parse_port(value: str | int) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"{value!r} is not a port number")
    return number


def _parse_optional_str(value: str | None) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _parse_optional_count(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    return _parse_positive_int(value)


_PARSERS = {
    "duration": parse_duration,
    "size": parse_size,
    "bool": _parse_bool,
    "names": _parse_names,
    "fraction": _parse_fraction,
    "count": _parse_positive_int,
    "port": _parse_port,
    "text": _parse_optional_str,
    "pid": _parse_optional_count,
    "threads": _parse_optional_count,
    "float": float,
}


def _setting(
    default: Any,
    kind: str,
    help: str,
    *,
    modes: str = "all",
    secret: bool = False,
    common: bool = False,
    metavar: str | None = None,
) -> Any:
    """A field with what the CLI and the README need: ``common`` ones lead ``--help``."""
    return field(
        default=default,
        repr=not secret,
        metadata={
            "kind": kind,
            "help": help,
            "modes": modes,
            "secret": secret,
            "level": "common" if common else "advanced",
            "metavar": metavar or _METAVARS.get(kind, kind.upper()),
        },
    )


_METAVARS = {"names": "NAMES", "pid": "PID", "threads": "COUNT", "float": "NUMBER"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every inferwatch setting. Build it with :meth:`Settings.load`, never field by field."""

    db: str = _setting(
        "inferwatch.duckdb", "text", "DuckDB log store file.", common=True, metavar="FILE"
    )
    baseline: str | None = _setting(
        None, "text", "Baseline JSON file; none = no skew checks.", common=True, metavar="FILE"
    )
    baselines: str | None = _setting(
        None,
        "text",
        "Baselines of several models behind one server: a folder of MODEL.json files or "
        "MODEL=PATH pairs (comma-separated); each model named in request paths is checked "
        "apart (/drift?model=MODEL).",
        metavar="FOLDER|PAIRS",
    )
    sample_rate: float = _setting(
        1.0,
        "fraction",
        "Share of requests whose payloads are stored (5xx always are).",
        common=True,
    )
    check_interval: float = _setting(60.0, "duration", "Time between skew checks.", common=True)
    window: float = _setting(
        3600.0, "duration", "How much recent traffic a skew check reads.", common=True
    )
    min_rows: int = _setting(100, "count", "Fewest rows a skew check gives a verdict on.")
    max_window_rows: int = _setting(
        500_000,
        "count",
        "Most input rows a periodic skew check reads: the newest of its window, so that its cost "
        "stays bounded at any request rate.",
    )
    attributions_field: str | None = _setting(
        None,
        "text",
        "Output field that holds per-feature attributions (SHAP values and the like), as stored: "
        'prediction.attributions for {"predictions": [{"attributions": {"age": 0.3}}]}.',
    )
    prediction_output: str | None = _setting(
        None,
        "text",
        "Output that is the prediction (default: the baseline's prediction column, the output "
        "matching it, the only output, or the one whose values fit).",
    )
    probability_field: str | None = _setting(
        None, "text", "Output field that is the predicted probability (inferred when clear)."
    )
    task: str | None = _setting(
        None, "text", "classification or regression (inferred from the predictions)."
    )
    min_labels: int = _setting(30, "count", "Fewest joined labels an evaluation judges.")
    evaluation_window: float = _setting(
        86400.0, "duration", "How far back evaluation joins labels with predictions."
    )
    max_body_bytes: int = _setting(
        1_048_576,
        "size",
        "Largest request or response body captured; larger ones are counted.",
        common=True,
    )
    db_memory: int = _setting(
        128 * 2**20, "size", "Memory DuckDB may use for the log store (caches and checks)."
    )
    db_threads: int | None = _setting(
        None,
        "threads",
        "Threads DuckDB may use (default: the CPUs this process may run on, within its cgroup).",
    )
    retention: float = _setting(
        7 * 86400.0, "duration", "Age after which logged rows are deleted.", common=True
    )
    max_db_bytes: int = _setting(
        2 * 2**30,
        "size",
        "Size of stored data above which the oldest rows are deleted.",
        common=True,
    )
    summary_retention: float = _setting(
        30 * 86400.0,
        "duration",
        "Age after which summaries (the per-minute counts that checks over long windows add up) "
        "are deleted; they are kept apart from raw rows and their retention.",
    )
    summary_rollup_after: float = _setting(
        2 * 86400.0,
        "duration",
        "Age after which per-minute summaries are merged into per-hour ones.",
    )
    admin_token: str | None = _setting(
        None,
        "text",
        "Bearer token that the dashboard, exports, labels and checks require; without one they "
        "answer only on loopback.",
        secret=True,
        common=True,
        metavar="TOKEN",
    )
    redact: tuple[str, ...] = _setting(
        (), "names", "Field names never stored (comma-separated).", common=True
    )
    api_prefix: str = _setting(
        "/monitor", "text", "Path of the monitor API.", modes="middleware", common=True
    )
    collector_linger: float = _setting(
        10.0,
        "duration",
        "How long a collector that a worker started waits with no worker connected before it "
        "writes everything and exits (long enough for a server to replace its workers).",
        modes="middleware",
    )
    collector_autostart: bool = _setting(
        True,
        "bool",
        "Let a worker start the collector when none runs; turn off when a collector container "
        "runs beside the app (Kubernetes), so that only that one ever owns the store.",
        modes="middleware",
    )
    queue_size: int = _setting(
        10_000,
        "count",
        "Captured requests held for the writer (and requests each worker holds while the "
        "collector is away); beyond it they are dropped.",
    )
    flush_interval: float = _setting(
        0.5, "duration", "Longest wait before captured rows are written."
    )
    max_features: int = _setting(
        1_000, "count", "Distinct feature names tracked per role; further names are counted."
    )
    max_fields_per_row: int = _setting(
        1_000, "count", "Fields kept from one instance; further fields are counted."
    )
    max_routes: int = _setting(100, "count", "Distinct route labels tracked; the rest are 'other'.")
    resource_interval: float = _setting(5.0, "duration", "Time between resource samples.")
    model_pid: int | None = _setting(None, "pid", "Process whose CPU, memory and GPU are reported.")
    model_process: str | None = _setting(
        None, "text", "Command-line text that finds the model's process (shared PID namespace)."
    )
    alert_rules: tuple[str, ...] = _setting(
        ("all",), "names", "Alert rules to run: all, names, or -name to turn one off."
    )
    alert_for: int = _setting(
        2, "count", "Consecutive checks a condition must hold to alert, and be clear to resolve."
    )
    alert_cooldown: float = _setting(
        600.0, "duration", "Quiet time after a resolve before the same rule alerts again."
    )
    alert_error_rate: float = _setting(0.05, "fraction", "Share of 5xx responses that alerts.")
    alert_min_requests: int = _setting(
        20, "count", "Requests in the health window below which error and latency rules stay quiet."
    )
    alert_latency: float = _setting(
        2.0, "duration", "Latency target; alerts when alert_latency_percentile is over it."
    )
    alert_latency_percentile: str = _setting(
        "p99", "text", "Latency percentile compared with alert_latency: p50, p90, p95 or p99."
    )
    alert_drop_rate: float = _setting(
        0.01, "fraction", "Share of sampled requests dropped or lost to store errors that alerts."
    )
    alert_memory_percent: float = _setting(
        90.0, "float", "Memory use, in percent of the cgroup limit, that alerts."
    )
    alert_gpu_memory_percent: float = _setting(
        95.0, "float", "Memory use of any GPU, in percent of its total, that alerts."
    )
    alert_base_url: str | None = _setting(
        None, "text", "Monitor API address people open (https://host/monitor), for alert links."
    )
    alert_source: str | None = _setting(
        None, "text", "Name of this model service in alerts (default: the host name)."
    )
    alert_webhook_url: str | None = _setting(
        None, "text", "Generic JSON webhook URL for alerts; file:PATH reads it.", secret=True
    )
    alert_slack_url: str | None = _setting(
        None,
        "text",
        "Slack, Mattermost or Rocket.Chat webhook URL; file:PATH reads it.",
        secret=True,
    )
    alert_teams_url: str | None = _setting(
        None, "text", "Microsoft Teams workflow webhook URL; file:PATH reads it.", secret=True
    )
    alert_smtp_host: str | None = _setting(None, "text", "SMTP server for alert email.")
    alert_smtp_port: int | None = _setting(
        None, "port", "SMTP port (default 587 for starttls, 465 for tls, 25 for none)."
    )
    alert_smtp_tls: str = _setting("starttls", "text", "SMTP security: starttls, tls or none.")
    alert_smtp_user: str | None = _setting(None, "text", "SMTP login user; none = no login.")
    alert_smtp_password: str | None = _setting(
        None, "text", "SMTP login password; file:PATH reads it.", secret=True
    )
    alert_email_from: str | None = _setting(
        None, "text", "Alert email sender (default: the SMTP user if it is an address)."
    )
    alert_email_to: tuple[str, ...] = _setting(
        (), "names", "Alert email recipients (comma-separated)."
    )
    alert_timeout: float = _setting(10.0, "duration", "Longest wait for one delivery attempt.")
    alert_attempts: int = _setting(
        6, "count", "Delivery attempts per alert and channel before it is given up."
    )
    alert_backoff: float = _setting(
        2.0, "duration", "Wait before the first retry; it doubles each retry, up to 5 minutes."
    )
    fleet_url: str | None = _setting(
        None,
        "text",
        "Shared storage this replica ships its summaries to, as Hive-partitioned Parquet: a "
        "folder or s3://bucket/prefix (docs/fleet.md); none = no shipping.",
        metavar="URL",
    )
    replica: str | None = _setting(
        None, "text", "This replica's name in the fleet's layout (default: the host name)."
    )
    fleet_interval: float = _setting(60.0, "duration", "Time between shipments to fleet_url.")
    fleet_raw: float = _setting(
        0.0,
        "fraction",
        "Share of requests whose raw feature rows are shipped beside the summaries (picked by "
        "request id, so that shipping again picks the same).",
    )
    fleet_lookback: float = _setting(
        3600.0,
        "duration",
        "How far back each shipment looks for rows that arrived late, shipping their hours again.",
    )
    fleet_storage_options: str | None = _setting(
        None,
        "text",
        'fsspec storage options of fleet_url as a JSON object ({"endpoint_url": ...}); '
        "default: the standard AWS_* environment variables; file:PATH reads it.",
        secret=True,
        metavar="JSON",
    )
    health_window: float = _setting(300.0, "duration", "Window of the serving health status.")
    error_rate_degraded: float = _setting(
        0.01, "fraction", "Share of 5xx responses at which health is degraded."
    )
    error_rate_failing: float = _setting(
        0.1, "fraction", "Share of 5xx responses at which health is failing."
    )
    latency_p99_degraded: float = _setting(
        1.0, "duration", "p99 latency at which health is degraded."
    )
    latency_p99_failing: float = _setting(
        5.0, "duration", "p99 latency at which health is failing."
    )
    drop_rate_degraded: float = _setting(
        0.01, "fraction", "Share of sampled requests dropped at which health is degraded."
    )
    upstream: str | None = _setting(
        None,
        "text",
        "Model server URL the sidecar forwards to.",
        modes="sidecar",
        common=True,
        metavar="URL",
    )
    host: str = _setting(
        "0.0.0.0",
        "text",
        "Address the sidecar's proxy listens on.",
        modes="sidecar",
        common=True,
        metavar="ADDRESS",
    )
    port: int = _setting(8000, "port", "Port of the sidecar's proxy.", modes="sidecar", common=True)
    # On every address by default: kubelet probes and Prometheus reach the admin port from the
    # node and the pod network. What exposes payloads or changes state is closed there unless
    # admin_token is set (middleware/api/access.py).
    admin_host: str = _setting(
        "0.0.0.0",
        "text",
        "Address of the sidecar's monitor API.",
        modes="sidecar",
        common=True,
        metavar="ADDRESS",
    )
    admin_port: int = _setting(
        8001, "port", "Port of the sidecar's monitor API.", modes="sidecar", common=True
    )
    sidecar_collector: bool = _setting(
        True,
        "bool",
        "Run the sidecar's engine in a collector process beside the proxy (as the middleware's "
        "workers do), so that parsing, writing and checks never take the proxy's CPU; off, the "
        "engine runs in the proxy's process.",
        modes="sidecar",
    )
    model_metadata: bool = _setting(
        True,
        "bool",
        "Read each served model's metadata (GET /v2/models/NAME, /v1/models/NAME) from the "
        "upstream, to tell the prediction among its outputs.",
        modes="sidecar",
    )
    upstream_timeout: float = _setting(
        300.0,
        "duration",
        "Longest wait for the upstream's response or its next body chunk; then 504.",
        modes="sidecar",
    )
    client_timeout: float = _setting(
        60.0,
        "duration",
        "Longest a client may take to send a request head, or pause in its body or in reading "
        "the response; then 408 and the connection closes.",
        modes="sidecar",
    )
    max_head_bytes: int = _setting(
        65_536, "size", "Largest request head (line and headers) read; larger ones get 431.",
        modes="sidecar",
    )  # fmt: skip
    upstream_connect_timeout: float = _setting(
        5.0, "duration", "Longest wait for a connection to the upstream; then 504.", modes="sidecar"
    )
    upstream_health_path: str | None = _setting(
        None,
        "text",
        "Upstream route whose 2xx answer makes /readyz ready; default: found from the upstream "
        "(/v2/health/ready, /v1/models, /health, /healthz, else a TCP connect).",
        modes="sidecar",
        common=True,
        metavar="PATH",
    )
    upstream_max_connections: int = _setting(
        100,
        "count",
        "Connections open to the upstream at most; further requests wait.",
        modes="sidecar",
    )
    upstream_keepalive: float = _setting(
        4.0,
        "duration",
        "Idle time after which an upstream connection is closed; keep it below the model "
        "server's keep-alive timeout.",
        modes="sidecar",
    )
    drain_timeout: float = _setting(
        20.0,
        "duration",
        "On SIGTERM, how long in-flight requests may take to finish before they are cut.",
        modes="sidecar",
    )

    @classmethod
    def load(
        cls,
        values: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        given_as: Callable[[str], str] | None = None,
    ) -> Settings:
        """Build settings from keywords (or flags), then the environment, then defaults.

        A bad value raises :class:`MonitorError` with one line naming the setting: as
        ``given_as(name)`` when it came from ``values`` (the CLI names its flags), as the
        environment variable when it came from there.
        """
        values = dict(values or {})
        environ = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MonitorError(f"Unknown setting {unknown[0]!r}.")
        resolved: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            env_name = ENV_PREFIX + spec.name.upper()
            if values.get(spec.name) is not None:
                raw = values[spec.name]
                source = given_as(spec.name) if given_as else f"setting {spec.name}"
            elif environ.get(env_name, "") != "":
                raw, source = environ[env_name], env_name
            else:
                continue
            try:
                resolved[spec.name] = _PARSERS[spec.metadata["kind"]](raw)
            except (TypeError, ValueError) as exc:
                raise MonitorError(f"Bad value for {source}: {exc}.") from exc
        settings = cls(**resolved)
        settings._validate()
        return settings

    def _validate(self) -> None:
        if not self.api_prefix.startswith("/") or self.api_prefix.endswith("/"):
            raise MonitorError(
                f"Bad value for setting api_prefix: {self.api_prefix!r} must start with '/' and "
                "not end with one."
            )
        if self.check_interval <= 0:
            raise MonitorError("Bad value for setting check_interval: it must be above zero.")
        if self.window <= 0:
            raise MonitorError("Bad value for setting window: it must be above zero.")
        if self.fleet_interval <= 0:
            raise MonitorError("Bad value for setting fleet_interval: it must be above zero.")

    def public(self) -> dict[str, Any]:
        """The settings as JSON-ready values, with secrets masked."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"] and value is not None:
                value = "***"
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out


SETTING_FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Settings)


def shown_default(spec: dataclasses.Field[Any]) -> str:
    """A setting's default as users write it (``1m``, ``1MiB``); empty when there is none."""
    default, kind = spec.default, spec.metadata["kind"]
    if default is None:
        return ""
    if isinstance(default, tuple):
        return ",".join(default)
    if kind == "duration":
        return format_duration(default)
    if kind == "size":
        return format_size(default)
    return str(default)


def settings_table() -> str:
    """The README's settings table, generated from :class:`Settings`."""
    lines = [
        "| keyword | flag | environment | default | kind | modes | meaning |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for spec in SETTING_FIELDS:
        shown = shown_default(spec) or "(none)"
        meta = spec.metadata
        lines.append(
            f"| `{spec.name}` | `--{spec.name.replace('_', '-')}` | "
            f"`{ENV_PREFIX}{spec.name.upper()}` | `{shown}` | {meta['kind']} | {meta['modes']} | "
            f"{meta['help']} |"
        )
    return "\n".join(lines) + "\n"


def _write_readme(path: str = "README.md") -> None:
    """Regenerate the settings table between the README's markers."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start, end = "<!-- settings:start -->\n", "<!-- settings:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(head + start + settings_table() + end + tail)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-readme"]:
        _write_readme()
    else:
        print(settings_table(), end="")
