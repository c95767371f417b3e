"""GET /openapi.json: the monitor API described by hand as an OpenAPI 3.1 document.

Written by hand rather than generated, because the API is plain Starlette: this document is the
contract's HTTP section (CONTRACT.md) in machine-readable form. Response shapes name the keys the
contract fixes and leave room for the ones it does not (``additionalProperties`` stays open), so
that a client generated from it keeps working as reports gain fields. tests/reliability runs
schemathesis against it: every route must answer within the statuses and shapes written here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..store.database import EXPORT_TABLES

__all__ = ["openapi_document", "openapi_endpoint"]

_VERSION = "1"

# ------------------------------------------------------------------ small builders


def _nullable(kind: str | list[str], **extra: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": [*kinds, "null"], **extra}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with these keys always present (and maybe others)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}
_TEXT = {"type": "string"}
_TIME = {"type": "string", "description": "ISO-8601 time, UTC"}
_ANY_OBJECT = {"type": "object"}

# ------------------------------------------------------------------ shapes of the contract

_PERCENTILES = _object({k: _nullable("number") for k in ("p50", "p90", "p95", "p99", "max")})

_HEALTH = _object(
    {
        "status": {"enum": ["ok", "degraded", "failing"]},
        "window_s": _NUMBER,
        "requests": _object(
            {
                "count": _COUNT,
                "per_second": _NUMBER,
                "errors": _COUNT,
                "error_rate": _NUMBER,
                "by_status": {"type": "object", "additionalProperties": _COUNT},
            }
        ),
        "latency_ms": _PERCENTILES,
        "resources": _nullable(
            "object",
            properties={
                "process": _ANY_OBJECT,
                "system": _ANY_OBJECT,
                "cgroup": _nullable("object"),
                "gpus": {"type": "array", "items": _ANY_OBJECT},
            },
        ),
        "capture": _object(
            {
                "sampled": _COUNT,
                "stored": _COUNT,
                "dropped": _COUNT,
                "write_errors": _COUNT,
                "queue_depth": _COUNT,
                "db_bytes": _COUNT,
                "db_memory_bytes": _nullable("integer"),
            },
            {"last_error": _nullable("string")},
        ),
    },
    {
        "covered_s": _NUMBER,
        "ttfb_ms": _PERCENTILES,
        "in_flight": {"type": "integer"},
        "models": {"type": "array", "items": _TEXT},  # the models with a baseline of their own
        "upstream": _object({"url": _TEXT, "reachable": _nullable("boolean")}),  # the sidecar only
    },
)

_HISTORY_POINT = _object({"ts": _TIME})
_HEALTH_HISTORY = _object(
    {
        "window_s": _NUMBER,
        "step_s": _NUMBER,
        "start": _TIME,
        "end": _TIME,
        "efficiency": {"type": "array", "items": _HISTORY_POINT},
        "resources": {"type": "array", "items": _HISTORY_POINT},
    }
)

_FEATURE = _object(
    {
        "kind": {"enum": ["numeric", "categorical"]},
        "method": _TEXT,
        "score": _nullable("number"),
        "threshold": _nullable("number"),
        "drifted": {"type": "boolean"},
        "rows": _COUNT,
    }
)
_ANOMALY_TYPES = [
    "missing_feature", "unexpected_feature", "type_mismatch", "completeness",
    "unseen_categories", "out_of_range", "non_finite", "parse_error",
]  # fmt: skip
_SCORED = {
    "rows": _COUNT,
    "alpha": _NUMBER,
    "status": {"enum": ["ok", "alert", "insufficient_data"]},
}
_OUTLIERS = _object(
    {
        **_SCORED,
        "count": _COUNT,
        "share": _nullable("number"),
        "expected_share": _NUMBER,
        "threshold": _NUMBER,
        "p_value": _NUMBER,
        "detected": {"type": "boolean"},
        "top": {
            "type": "array",
            "items": _object(
                {
                    "request_id": _TEXT,
                    "row_index": {"type": "integer"},
                    "ts": _TIME,
                    "score": _NUMBER,
                    "features": {
                        "type": "array",
                        "items": _object({"name": _TEXT, "contribution": _NUMBER}),
                    },
                }
            ),
        },
    }
)
_MULTIVARIATE = _object(
    {
        **_SCORED,
        "method": _TEXT,
        "mean_score": _nullable("number"),
        "baseline_mean": _NUMBER,
        "lower": _NUMBER,
        "upper": _NUMBER,
        "z": _nullable("number"),
        "drifted": {"type": "boolean"},
    }
)
_DRIFT = _object(
    {
        "status": {"enum": ["ok", "alert", "insufficient_data", "no_baseline"]},
        "checked_at": _TIME,
        "window": _object({"start": _TIME, "end": _TIME, "rows": _COUNT}),
        "baseline": _object({"path": _nullable("string"), "rows": _nullable("integer")}),
        "drift_detected": {"type": "boolean"},
        "skew_detected": {"type": "boolean"},
        "drifted_features": {"type": "array", "items": _TEXT},
        "features": {"type": "object", "additionalProperties": _FEATURE},
        "prediction": {"type": "object", "additionalProperties": _FEATURE},
        "schema_anomalies": {
            "type": "array",
            "items": _object(
                {
                    "feature": _nullable("string"),
                    "type": {"enum": _ANOMALY_TYPES},
                    "share": _nullable("number"),
                    "detail": _TEXT,
                }
            ),
        },
    },
    # with a baseline that has an outlier model, once the window has enough rows
    {"outliers": _OUTLIERS, "multivariate": _MULTIVARIATE},
)

_LABEL = {
    "type": "object",
    "required": ["request_id", "label"],
    "additionalProperties": False,
    "properties": {
        "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "index": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 0},
        "label": {"type": ["number", "string", "boolean"]},
        "timestamp": {"type": ["string", "number"], "description": "ISO-8601 or epoch seconds"},
    },
}

_EVALUATION = _object(
    {
        "status": {
            "enum": ["ok", "degraded", "no_labels", "insufficient_labels", "unknown_prediction"]
        },
        "evaluated_at": _TIME,
        "task": _nullable("string"),
        "window": _object({"start": _TIME, "end": _TIME}),
        "coverage": _nullable("number"),
        "metrics": _nullable("object"),
        "buckets": {"type": "array", "items": _ANY_OBJECT},
        "baseline": _nullable("object"),
        "degraded": {"type": "boolean"},
        "reasons": {"type": "array", "items": _TEXT},
    }
)

_ALERT = _object(
    {
        "id": _TEXT,
        "rule": _TEXT,
        "state": {"enum": ["firing", "resolved"]},
        "severity": _TEXT,
        "at": _TIME,
        "summary": _TEXT,
    }
)
_ALERTS = _object(
    {
        "active": {"type": "array", "items": _ANY_OBJECT},
        "history": {"type": "array", "items": _ALERT},
        "channels": {
            "type": "array",
            "items": _object({"name": _TEXT, "target": _TEXT}),
        },
    }
)

# ------------------------------------------------------------------ parameters


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_WINDOW = _query("window", _TEXT, "a duration: 90s, 5m, 1h, 7d or plain seconds")
_SINCE = _query("since", {"type": "string", "format": "date-time"}, "ISO-8601 time")
_LIMIT = _query("limit", {"type": "integer"}, "how many at most (kept to 1..1000)")
_WINDOW = _query("window", _TEXT, "a window to check instead of the setting's: 24h, 7d")
_AGAINST = _query(
    "against", _TEXT, "compare with an earlier window instead of the baseline: 7d-ago, 30d@7d-ago"
)
_HISTORY_WINDOW = _query("window", _TEXT, "the reports of the last 24h, 7d (when no since)")
_MODEL = _query("model", _TEXT, "a model of the baselines setting (default: every request's)")

# ------------------------------------------------------------------ the document


def openapi_document(*, token_required: bool = False, server: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the monitor API.

    ``token_required`` marks the guarded routes (``middleware/api/access.py``) as needing the bearer
    token, as they do when ``admin_token`` is set; without it they answer 403 to requests from
    beyond loopback. ``server`` is the path the API is served under (``api_prefix`` in the
    middleware, empty on the sidecar's admin port).
    """
    guarded: dict[str, Any] = {"security": [{"adminToken": []}]} if token_required else {}
    unauthorized = (
        {"401": _error("the admin token is missing or wrong")}
        if token_required
        else {"403": _error("no admin_token is set and the request came from beyond loopback")}
    )
    unavailable = _error("the log store is unavailable")
    no_model = _error("no baseline for that model")
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness: 200 while the process can serve",
                "operationId": "healthz",
                "responses": {"200": _json(_object({"status": {"const": "ok"}}), "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: 200 once the engine runs, else 503 with reasons",
                "operationId": "readyz",
                "responses": {
                    "200": _json(_object({"status": {"const": "ready"}}), "ready"),
                    "503": _json(
                        _object(
                            {
                                "status": {"const": "unavailable"},
                                "reasons": {"type": "array", "items": _TEXT, "minItems": 1},
                            }
                        ),
                        "not ready, and why",
                    ),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Serving efficiency over ?window=",
                "operationId": "health",
                "parameters": [_WINDOW],
                "responses": {
                    "200": _json(_ref("Health"), "the health report"),
                    "400": _error("a bad window"),
                },
            }
        },
        "/health/history": {
            "get": {
                "summary": "The efficiency and resource series the dashboard draws",
                "operationId": "healthHistory",
                "parameters": [
                    _WINDOW,
                    _query("points", {"type": "integer"}, "points per series, 1 to 2000"),
                ],
                "responses": {
                    "200": _json(_ref("HealthHistory"), "the series"),
                    "400": _error("a bad window or points"),
                    "503": unavailable,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "the metrics",
                        "content": {"text/plain": {"schema": _TEXT}},
                    }
                },
            }
        },
        "/drift": {
            "get": {
                "summary": "The latest skew check (one is run if none has been)",
                "operationId": "drift",
                **guarded,
                "parameters": [_MODEL, _WINDOW, _AGAINST],
                "responses": {
                    "200": _json(_ref("DriftReport"), "the latest report"),
                    "400": _error("a bad window or against"),
                    **unauthorized,
                    "404": no_model,
                    "503": unavailable,
                },
            }
        },
        "/drift/check": {
            "post": {
                "summary": "Run a skew check now",
                "operationId": "driftCheck",
                **guarded,
                "parameters": [_MODEL, _WINDOW, _AGAINST],
                "responses": {
                    "200": _json(_ref("DriftReport"), "the new report"),
                    "400": _error("a bad window or against"),
                    **unauthorized,
                    "404": no_model,
                    "503": unavailable,
                },
            }
        },
        "/drift/history": {
            "get": {
                "summary": "Earlier skew checks, newest first",
                "operationId": "driftHistory",
                **guarded,
                "parameters": [_SINCE, _LIMIT, _MODEL, _HISTORY_WINDOW],
                "responses": {
                    **unauthorized,
                    "200": _json(
                        _object({"reports": {"type": "array", "items": _ref("DriftReport")}}),
                        "earlier reports (of that model's checks with model)",
                    ),
                    "400": _error("a bad since or limit"),
                    "404": no_model,
                },
            }
        },
        "/labels": {
            "post": {
                "summary": "Ground truth for captured predictions",
                "operationId": "labels",
                **guarded,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"type": "array", "items": _ref("Label"), "maxItems": 100_000},
                                    _ref("Label"),
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        _object({"accepted": _COUNT, "matched": _COUNT}), "labels written"
                    ),
                    "400": _error("a bad body, naming the first bad item"),
                    **unauthorized,
                    "413": _error("a body over 32 MiB"),
                    "503": unavailable,
                },
            }
        },
        "/evaluation": {
            "get": {
                "summary": "Model quality from joined labels",
                "operationId": "evaluation",
                "parameters": [_MODEL],
                "responses": {
                    "200": _json(_ref("Evaluation"), "the evaluation"),
                    "404": no_model,
                    "503": unavailable,
                },
            }
        },
        "/alerts": {
            "get": {
                "summary": "Alerts firing, sent and resolved",
                "operationId": "alerts",
                **guarded,
                "parameters": [_SINCE, _LIMIT],
                "responses": {
                    **unauthorized,
                    "200": _json(_ref("Alerts"), "active alerts, history and channels"),
                    "400": _error("a bad since or limit"),
                },
            }
        },
        "/export/{table}.parquet": {
            "get": {
                "summary": "A table of the log store as Parquet",
                "operationId": "export",
                **guarded,
                "parameters": [
                    {
                        "name": "table",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": list(EXPORT_TABLES)},
                    },
                    _query("since", {"type": "string", "format": "date-time"}, "ISO-8601 time"),
                    _query("until", {"type": "string", "format": "date-time"}, "ISO-8601 time"),
                ],
                "responses": {
                    "200": {
                        "description": "the rows logged in [since, until)",
                        "content": {"application/vnd.apache.parquet": {"schema": _TEXT}},
                    },
                    "400": _error("a bad since or until"),
                    **unauthorized,
                    "404": {"description": "no such table"},
                    "503": unavailable,
                },
            }
        },
        "/dashboard": {
            "get": {
                "summary": "The page a person reads",
                "operationId": "dashboard",
                **guarded,
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {"schema": _TEXT}}},
                    **(
                        {
                            "401": {
                                "description": "the token is missing or wrong: a sign-in page "
                                "for a browser, a JSON error otherwise",
                                "content": {
                                    "text/html": {"schema": _TEXT},
                                    "application/json": {"schema": _ref("Error")},
                                },
                            }
                        }
                        if token_required
                        else unauthorized
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _json(_ANY_OBJECT, "the OpenAPI document")},
            }
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "inferwatch monitor API",
            "version": _VERSION,
            "description": "Health, readiness, metrics, drift, labels, evaluation, alerts, "
            "exports and the dashboard of one monitored model (CONTRACT.md, 'HTTP').",
        },
        "servers": [{"url": server or "/"}],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": _TEXT},
                },
                "Health": _HEALTH,
                "HealthHistory": _HEALTH_HISTORY,
                "DriftReport": _DRIFT,
                "Label": _LABEL,
                "Evaluation": _EVALUATION,
                "Alerts": _ALERTS,
            },
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }
    return document


def openapi_endpoint(token_required: bool) -> Callable[[Request], Awaitable[Response]]:
    """GET /openapi.json: the document, its server being the path the API is mounted at."""
    documents: dict[str, dict[str, Any]] = {}

    async def endpoint(request: Request) -> Response:
        server = request.scope.get("root_path", "")
        document = documents.get(server)
        if document is None:
            document = documents[server] = openapi_document(
                token_required=token_required, server=server
            )
        return JSONResponse(document)

    return endpoint
