"""The columnizer lays captures out exactly as a plain loop over every value would."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middleware._capture import Capture, CaptureCounters
from middleware._columns import Columnizer
from middleware._payload import ParseLimits, parse_request, parse_response


def _capture(request: Any, response: Any, *, raw: bytes | None = None) -> Capture:
    return Capture(
        ts=1_700_000_000.25,
        request_id="r-" + str(id(request)),
        method="POST",
        path="/predict",
        route="/predict",
        status=200,
        latency_s=0.002,
        ttfb_s=None,
        request_body=(raw if raw is not None else orjson.dumps(request),),
        request_bytes=10,
        request_truncated=False,
        request_content_type="application/json",
        response_body=(orjson.dumps(response),),
        response_bytes=10,
        response_truncated=False,
        response_content_type="application/json",
        error=None,
    )


def _reference(
    captures: list[Capture], limits: ParseLimits, max_names: int, counters: CaptureCounters
) -> list[tuple[Any, ...]]:
    """The feature rows as one Python loop over every value produces them."""
    known: dict[str, set[str]] = {"input": set(), "output": set()}
    out: list[tuple[Any, ...]] = []
    for capture in captures:
        parsed = (
            ("input", parse_request(b"".join(capture.request_body), limits=limits)),
            ("output", parse_response(b"".join(capture.response_body), limits=limits)),
        )
        for role, result in parsed:
            for index, row in enumerate(result.rows):
                for name, value in row.items():
                    if name not in known[role]:
                        if len(known[role]) >= max_names:
                            counters.names_capped += 1
                            continue
                        known[role].add(name)
                    if isinstance(value, str):
                        kind, num, text = "string", None, value
                    elif isinstance(value, bool):
                        kind, num, text = "boolean", float(value), None
                    elif value is None:
                        kind, num, text = "null", None, None
                    else:
                        kind, num, text = "number", float(value), None  # type: ignore[arg-type]
                    out.append((capture.request_id, index, role, name, kind, num, text))
    return out


def _laid_out(features: dict[str, np.ndarray] | None) -> list[tuple[Any, ...]]:
    if features is None:
        return []
    rows = zip(
        features["request_id"],
        features["row_index"].tolist(),
        features["role"],
        features["name"],
        features["type"],
        features["num"].tolist(),
        features["str"],
        strict=True,
    )
    # NaN stands for "no number" in the array; the store keeps it only for numbers.
    return [
        (*row[:5], None if isinstance(row[5], float) and math.isnan(row[5]) else row[5], row[6])
        for row in rows
    ]


def _same(left: list[tuple[Any, ...]], right: list[tuple[Any, ...]]) -> bool:
    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        num = row[5]
        return (*row[:5], "nan" if isinstance(num, float) and math.isnan(num) else num, row[6])

    return [key(r) for r in left] == [key(r) for r in right]


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_names = st.sampled_from(["a", "b", "c", "d", "e", "f", "a.b", "x y"]) | st.text(max_size=8)
_records = st.dictionaries(_names, _scalars | st.lists(_scalars, max_size=3), max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    batch=st.lists(
        st.tuples(st.lists(_records, max_size=4), st.lists(_scalars, max_size=4)), max_size=6
    ),
    max_names=st.integers(min_value=0, max_value=10),
    max_fields=st.integers(min_value=1, max_value=10),
)
def test_columns_equal_a_loop_over_every_value(
    batch: list[tuple[list[dict[str, Any]], list[Any]]], max_names: int, max_fields: int
) -> None:
    captures = [_capture({"instances": rows}, {"predictions": preds}) for rows, preds in batch]
    limits = ParseLimits(max_fields_per_row=max_fields, redact=frozenset({"c"}))
    expected_counters, counters = CaptureCounters(), CaptureCounters()
    expected = _reference(captures, limits, max_names, expected_counters)
    columnizer = Columnizer(limits=limits, max_names=max_names, counters=counters)
    requests, features = columnizer.columns(captures)
    assert _same(_laid_out(features), expected)
    assert counters.names_capped == expected_counters.names_capped
    assert len(requests["request_id"]) == len(captures)


def test_names_stay_capped_across_batches() -> None:
    counters = CaptureCounters()
    columnizer = Columnizer(limits=ParseLimits(), max_names=3, counters=counters)
    columnizer.columns([_capture({"a": 1, "b": 2}, {"y": 1})])
    _, features = columnizer.columns([_capture({"c": 3, "d": 4, "a": 5}, {"y": 2})])
    assert features is not None
    assert list(features["name"]) == ["c", "a", "y"]
    assert counters.names_capped == 1
    assert columnizer.names["input"] == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("raw", "kind", "num"),
    [
        (b'{"x": NaN}', "number", None),
        (b'{"x": Infinity}', "number", math.inf),
        (b'{"x": 18446744073709551615}', "number", 18446744073709551615.0),
        (b'{"x": 1' + b"0" * 400 + b"}", "number", math.inf),
        (b'{"x": true}', "boolean", 1.0),
        (b'{"x": null}', "null", None),
    ],
)
def test_values_keep_their_type(raw: bytes, kind: str, num: float | None) -> None:
    columnizer = Columnizer(limits=ParseLimits(), max_names=10, counters=CaptureCounters())
    _, features = columnizer.columns([_capture(None, None, raw=raw)])
    assert features is not None
    assert list(features["type"]) == [kind]
    value = features["num"][0]
    assert math.isnan(value) if num is None else value == num
    assert features["str"][0] is None


def test_a_batch_without_values_has_no_feature_rows() -> None:
    columnizer = Columnizer(limits=ParseLimits(), max_names=10, counters=CaptureCounters())
    requests, features = columnizer.columns([_capture({}, [])])
    assert features is None
    assert list(requests["input_rows"]) == [1]
