"""The columnizer lays captures out exactly as a plain loop over every value would."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferwatch.middleware.payload.exchange import Capture, CaptureCounters
from inferwatch.middleware.payload.parse import ParseLimits, parse_request, parse_response
from inferwatch.middleware.store.columns import Batch, Columnizer


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


def _laid_out(
    columnizer: Columnizer, batch: Batch, columns: dict[int, tuple[str, str, str]] | None = None
) -> list[tuple[Any, ...]]:
    """The batch's feature rows in long form, column ids spelled out as (role, name, type)."""
    columns = {} if columns is None else columns
    if batch.new_columns is not None:
        new = batch.new_columns
        described = zip(new["id"], new["role"], new["name"], new["type"], strict=True)
        for i, role, name, kind in described:
            assert int(i) not in columns
            columns[int(i)] = (role, name, kind)
        columnizer.ids.mark_stored(new["id"])
    features = batch.features
    if features is None:
        return []
    rows = zip(
        features["request_id"],
        features["row_index"].tolist(),
        features["column_id"].tolist(),
        features["num"].tolist(),
        features["str"],
        strict=True,
    )
    # NaN stands for "no number" in the array; the store keeps it only for numbers.
    return [
        (rid, index, *columns[cid], None if isinstance(num, float) and math.isnan(num) else num, s)
        for rid, index, cid, num, s in rows
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
    batch = columnizer.columns(captures)
    assert _same(_laid_out(columnizer, batch), expected)
    assert counters.names_capped == expected_counters.names_capped
    assert len(batch.requests["request_id"]) == len(captures)


def test_names_stay_capped_across_batches() -> None:
    counters = CaptureCounters()
    columnizer = Columnizer(limits=ParseLimits(), max_names=3, counters=counters)
    columns: dict[int, tuple[str, str, str]] = {}
    _laid_out(columnizer, columnizer.columns([_capture({"a": 1, "b": 2}, {"y": 1})]), columns)
    rows = _laid_out(
        columnizer, columnizer.columns([_capture({"c": 3, "d": 4, "a": 5}, {"y": 2})]), columns
    )
    assert [row[3] for row in rows] == ["c", "a", "y"]
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
    batch = columnizer.columns([_capture(None, None, raw=raw)])
    [(_, _, role, name, stored_kind, _, text)] = _laid_out(columnizer, batch)
    assert (role, name, stored_kind, text) == ("input", "x", kind, None)
    assert batch.features is not None
    value = batch.features["num"][0]
    assert math.isnan(value) if num is None else value == num


def test_a_batch_without_values_has_no_feature_rows() -> None:
    columnizer = Columnizer(limits=ParseLimits(), max_names=10, counters=CaptureCounters())
    batch = columnizer.columns([_capture({}, [])])
    assert batch.features is None
    assert batch.new_columns is None
    assert list(batch.requests["input_rows"]) == [1]


def test_a_column_id_is_new_once_per_store() -> None:
    columnizer = Columnizer(limits=ParseLimits(), max_names=10, counters=CaptureCounters())
    first = columnizer.columns([_capture({"a": 1, "b": "x"}, [0.5])])
    assert first.new_columns is not None
    assert sorted(first.new_columns["name"]) == ["a", "b", "prediction"]
    again = columnizer.columns([_capture({"a": 2, "b": "y"}, [0.1])])
    assert again.new_columns is not None  # the store has not committed the first batch
    columnizer.ids.mark_stored(again.new_columns["id"])
    assert columnizer.columns([_capture({"a": 3, "b": "z"}, [0.2])]).new_columns is None
    # a new type for a known name is a new column with the name's index
    mixed = columnizer.columns([_capture({"a": "three"}, [0.2])])
    assert mixed.new_columns is not None
    assert list(mixed.new_columns["type"]) == ["string"]
    assert mixed.new_columns["id"][0] >> 3 == first.features["column_id"][0] >> 3  # type: ignore[index]
