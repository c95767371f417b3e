"""The parsers' fast lanes give exactly what the general path gives, whatever the body and limits.

A body that starts with whitespace skips the fast lanes and parses the general way, to the same
JSON: each case is parsed both ways and the results compared whole.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferwatch.middleware.payload import parse
from inferwatch.middleware.payload.parse import ParseLimits, parse_request, parse_response

_names = st.sampled_from(["age", "income", "country", "a" * 40, "prediction", "x.y", "0"])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.text(min_size=1020, max_size=1030),
)
_values = st.one_of(
    _scalars, st.lists(_scalars, max_size=2), st.dictionaries(_names, _scalars, max_size=2)
)
_records = st.dictionaries(_names, _values, max_size=6)
_instances = st.lists(st.one_of(_records, st.lists(_scalars, max_size=3), _scalars), max_size=5)
_limits = st.builds(
    ParseLimits,
    max_fields_per_row=st.sampled_from([1, 3, 1000]),
    max_name_length=st.sampled_from([3, 9, 10, 256]),
    max_rows=st.sampled_from([1, 2, 10_000]),
    redact=st.sampled_from([frozenset(), frozenset({"income"}), frozenset({"prediction"})]),
)


def _both(parse: Any, body: dict[str, Any], **kwargs: Any) -> tuple[Any, Any]:
    raw = orjson.dumps(body)
    return parse(raw, **kwargs), parse(b" " + raw, **kwargs)


@settings(max_examples=400, deadline=None)
@given(
    instances=_instances,
    extra=st.sampled_from([{}, {"parameters": {"k": 1}}, {"dataframe_split": {"data": []}}]),
    path=st.sampled_from(["/predict", "/v1/models/m:predict", "/v1/chat/completions"]),
    limits=_limits,
)
def test_instances_as_the_general_path_gives_them(
    instances: list[Any], extra: dict[str, Any], path: str, limits: ParseLimits
) -> None:
    fast, general = _both(
        parse_request, {"instances": instances, **extra}, path=path, limits=limits
    )
    assert fast == general


@settings(max_examples=400, deadline=None)
@given(
    predictions=st.one_of(st.lists(st.one_of(_scalars, st.lists(_scalars)), max_size=5), _values),
    extra=st.sampled_from([{}, {"outputs": []}]),
    path=st.sampled_from(["/predict", "/predictions/m", "/v1/completions"]),
    limits=_limits,
)
def test_predictions_as_the_general_path_gives_them(
    predictions: Any, extra: dict[str, Any], path: str, limits: ParseLimits
) -> None:
    fast, general = _both(
        parse_response, {"predictions": predictions, **extra}, path=path, limits=limits
    )
    assert fast == general


def test_the_common_bodies_take_the_fast_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    def general_path(*_: Any) -> None:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(parse, "_Ctx", general_path)
    body = orjson.dumps({"instances": [{"age": 41, "country": "KR", "active": True}]})
    parsed = parse_request(body)
    assert parsed.status == "ok" and parsed.names == "by_name"
    assert parsed.rows == [{"age": 41, "country": "KR", "active": True}]
    answer = parse_response(b'{"predictions": [0.25, 1]}')
    assert answer.rows == [{"prediction": 0.25}, {"prediction": 1}] and answer.names is None
