"""Property-based fuzzing of the payload parser: every contract format with random contents.

tests/middleware/payload/test_payload.py already shows that arbitrary bytes and JSON never make the
parser raise. Here each contract shape is generated with random names and values and the rows
are compared with what the contract says they must be: names kept exactly (hostile ones
included), a number stays a number, a string a string, a boolean a boolean, and the caps hold for
random limits. Bodies are also mutated byte by byte, to reach the paths between valid and invalid.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferwatch.middleware.payload.parse import Parsed, ParseLimits, parse_request, parse_response
from tests.middleware.payload.test_payload import check

# CI runs 200 examples per property; INFERWATCH_RELIABILITY_FULL=1 runs 5,000.
EXAMPLES = 5000 if os.environ.get("INFERWATCH_RELIABILITY_FULL") == "1" else 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I64_MIN, U64_MAX = -(2**63), 2**64 - 1
HOSTILE_NAMES = [
    "a'; DROP TABLE requests;--",
    '"',
    "'",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "\\",
    "\x00",
    "\u2028",
    "名前",
    "a.b",
    "x[0]",
    " ",
    "",
]
REQUEST_KEYS = frozenset({"instances", "dataframe_records", "inputs", "dataframe_split"})
RESPONSE_KEYS = frozenset({"predictions", "outputs"})

# ------------------------------------------------------------------ strategies

names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=10))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too: they must come back as floats, still numbers
    st.floats(),  # NaN and infinities too: json.dumps writes them, the fallback reads them
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=10,
)


def records(reserved: frozenset[str] = frozenset()) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(names.filter(lambda n: n not in reserved), values, max_size=6)


# ------------------------------------------------------------------ what the contract says


def expected_value(v: Any) -> Any:
    """A value as the parser must keep it: integers beyond 64 bits become floats."""
    if type(v) is int and not I64_MIN <= v <= U64_MAX:
        return float(v) if abs(v) < 2**1023 else math.copysign(math.inf, v)
    return v


def flatten(value: Any, name: str, out: dict[str, Any]) -> None:
    """Flattened names of the contract: ``user.age`` for objects, ``emb[0]`` for lists."""
    if type(value) is dict:
        for key, sub in value.items():
            flatten(sub, f"{name}.{key}", out)
    elif type(value) is list:
        for i, sub in enumerate(value):
            flatten(sub, f"{name}[{i}]", out)
    else:
        out[name] = expected_value(value)


def record_row(obj: dict[str, Any], prefix: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if prefix is not None:
        flatten(obj, prefix, row)
    else:
        for key, value in obj.items():
            flatten(value, key, row)
    return row


def same(actual: Any, expected: Any) -> bool:
    """Equal, of the same type; NaN equals NaN. An int may come back as an equal float only
    when it was too large for 64 bits, which :func:`expected_value` already made a float."""
    if type(actual) is not type(expected):
        return False
    if type(actual) is float and math.isnan(expected):
        return math.isnan(actual)
    return actual == expected


def assert_rows(parsed: Parsed, expected: list[dict[str, Any]]) -> None:
    check(parsed)
    assert parsed.status == "ok", parsed.detail
    assert len(parsed.rows) == len(expected)
    for got, want in zip(parsed.rows, expected, strict=True):
        assert list(got) == list(want)  # names exactly, and in their order
        for name, value in want.items():
            assert same(got[name], value), (name, got[name], value)
    assert parsed.capped == 0 and parsed.redacted == 0


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()  # stdlib: writes NaN, Infinity and big integers


# ------------------------------------------------------------------ request shapes


@FUZZ
@given(records(REQUEST_KEYS))
def test_a_record_keeps_every_name_and_type(obj: dict[str, Any]) -> None:
    assert_rows(parse_request(encode(obj), path="/predict"), [record_row(obj)])


@FUZZ
@given(
    st.lists(records(), max_size=4),
    st.sampled_from(["list", "instances", "dataframe_records", "inputs"]),
)
def test_batches_of_records_give_a_row_per_instance(batch: list[Any], key: str) -> None:
    body = batch if key == "list" else {key: batch}
    if key == "inputs" and batch and all("name" in r and "data" in r for r in batch):
        return  # that is a tensor list, tested below
    assert_rows(parse_request(encode(body)), [record_row(r) for r in batch])


@FUZZ
@given(
    st.lists(st.lists(scalars, max_size=6) | scalars, max_size=6),
    st.sampled_from(["instances", "dataframe_records", "list"]),
    st.none() | st.lists(names, min_size=6, max_size=6, unique=True),
)
def test_positional_instances_are_named_by_position_or_columns(
    batch: list[Any], key: str, columns: list[str] | None
) -> None:
    if key == "list":  # a bare list holds lists only; a scalar is not an instance there
        batch = [item for item in batch if type(item) is list]
    body = batch if key == "list" else {key: batch}
    expected = []
    for item in batch:
        items = item if type(item) is list else [item]
        given_names = columns or [f"f{i}" for i in range(6)]
        expected.append({given_names[i]: expected_value(v) for i, v in enumerate(items)})
    assert_rows(parse_request(encode(body), columns=columns), expected)


@FUZZ
@given(
    st.lists(names, min_size=1, max_size=6, unique=True),
    st.lists(st.lists(scalars, min_size=6, max_size=6), max_size=6),
)
def test_dataframe_split_names_the_columns(columns: list[str], data: list[list[Any]]) -> None:
    body = {"dataframe_split": {"columns": columns, "data": data, "index": list(range(len(data)))}}
    # Positions beyond the columns are named by position, as list instances are.
    given_names = [*columns, *(f"f{i}" for i in range(len(columns), 6))]
    expected = [{given_names[i]: expected_value(v) for i, v in enumerate(row)} for row in data]
    assert_rows(parse_request(encode(body), columns=["ignored"] * 6), expected)


tensor_values = st.one_of(
    st.integers(I64_MIN, U64_MAX), st.floats(), st.booleans(), st.text(max_size=8)
)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Open Inference Protocol tensors and the rows they must give."""
    n = draw(st.integers(1, 5))
    tensor_names = draw(
        st.lists(names.filter(lambda s: "[" not in s), min_size=1, max_size=3, unique=True)
    )
    specs, rows = [], [{} for _ in range(n)]
    for name in tensor_names:
        width = draw(st.integers(0, 4))  # 0: a 1-D tensor, one value per instance
        flat = draw(st.lists(tensor_values, min_size=n * max(width, 1), max_size=n * max(width, 1)))
        shape = [n] if width == 0 else [n, width]
        nested = width > 0 and draw(st.booleans())
        data = [flat[i * width : (i + 1) * width] for i in range(n)] if nested else flat
        specs.append({"name": name, "shape": shape, "datatype": "BYTES", "data": data})
        for i in range(n):
            if width <= 1:  # shape [N] and [N, 1]: one column named by the tensor
                rows[i][name] = flat[i]
            else:
                rows[i].update({f"{name}[{j}]": flat[i * width + j] for j in range(width)})
    return specs, rows


@FUZZ
@given(tensors())
def test_open_inference_protocol_tensors(case: tuple[list[Any], list[Any]]) -> None:
    specs, rows = case
    assert_rows(parse_request(encode({"inputs": specs, "id": "r"})), rows)
    assert_rows(parse_response(encode({"model_name": "m", "outputs": specs})), rows)


# ------------------------------------------------------------------ response shapes


@FUZZ
@given(records(RESPONSE_KEYS))
def test_a_response_record_keeps_every_name_and_type(obj: dict[str, Any]) -> None:
    assert_rows(parse_response(encode(obj)), [record_row(obj)])


@FUZZ
@given(
    st.lists(scalars | st.lists(scalars, max_size=4) | records(), max_size=6),
    st.booleans(),
)
def test_predictions_give_a_row_each(predictions: list[Any], bare: bool) -> None:
    body = predictions if bare else {"predictions": predictions, "model_version": "1"}
    expected = []
    if predictions and all(type(p) is list and len(p) == 1 for p in predictions):
        predictions = [p[0] for p in predictions]  # shape [N, 1]: one column
    for p in predictions:
        row: dict[str, Any] = {}
        flatten(p, "prediction", row)
        expected.append(row)
    assert_rows(parse_response(encode(body)), expected)


@FUZZ
@given(st.dictionaries(names, st.lists(scalars, max_size=5), min_size=1, max_size=4))
def test_column_oriented_predictions(columns: dict[str, list[Any]]) -> None:
    longest = max(map(len, columns.values()))
    expected: list[dict[str, Any]] = [{} for _ in range(longest)]
    for name, column in columns.items():
        for row, v in zip(expected, column, strict=False):
            row[f"prediction.{name}"] = expected_value(v)
    assert_rows(parse_response(encode({"predictions": columns})), expected)


# ------------------------------------------------------------------ OpenAI-style


@FUZZ
@given(
    st.text(max_size=30),
    st.lists(st.text(max_size=50), max_size=5),
    st.none() | st.integers(0, 2**31),
    st.none() | st.floats(0, 2),
)
def test_chat_requests_are_summed(
    model: str, contents: list[str], max_tokens: int | None, temperature: float | None
) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": c} for c in contents],
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    expected = {
        "model": model,
        "message_count": len(contents),
        "prompt_chars": len("".join(contents)),
    }
    expected |= {
        k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None
    }
    assert_rows(parse_request(encode(body), path="/v1/chat/completions"), [expected])


@FUZZ
@given(
    st.lists(st.text(max_size=20), min_size=1, max_size=8),
    st.sampled_from(["stop", "length", "<script>alert(1)</script>"]),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.integers(0, 10_000),
    st.booleans(),
)
def test_chat_streams_and_whole_answers_count_every_character(
    pieces: list[str], finish: str, newline: str, tokens: int, stream: bool
) -> None:
    usage = {"prompt_tokens": tokens, "completion_tokens": len(pieces)}
    if stream:
        events = [
            {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
            for p in pieces
        ]
        events.append({"choices": [{"delta": {}, "finish_reason": finish}], "usage": usage})
        body = "".join(f"data: {json.dumps(e)}{newline}{newline}" for e in events)
        body += f"data: [DONE]{newline}{newline}"
        raw, content_type = body.encode(), "text/event-stream"
    else:
        answer = {"content": "".join(pieces), "role": "assistant"}
        whole = {"choices": [{"message": answer, "finish_reason": finish}], "usage": usage}
        raw, content_type = encode(whole), "application/json"
    expected = {
        "prompt_tokens": tokens,
        "completion_tokens": len(pieces),
        "finish_reason": finish,
        "completion_chars": len("".join(pieces)),
    }
    parsed = parse_response(raw, path="/v1/chat/completions", content_type=content_type)
    assert_rows(parsed, [expected])


# ------------------------------------------------------------------ caps and mutations

shaped = st.one_of(
    values,
    st.builds(lambda v: {"instances": v}, st.lists(values, max_size=8)),
    st.builds(lambda v: {"predictions": v}, values),
    st.builds(lambda c, d: {"dataframe_split": {"columns": c, "data": d}}, values, values),
    tensors().map(lambda case: {"inputs": case[0], "outputs": case[0]}),
)
limits = st.builds(
    ParseLimits,
    max_fields_per_row=st.integers(1, 12),
    max_name_length=st.integers(1, 40),
    max_rows=st.integers(1, 6),
    redact=st.frozensets(names, max_size=3),
)


@FUZZ
@given(shaped, limits, st.sampled_from(["/", "/v1/chat/completions", "/v1/completions"]))
def test_caps_hold_for_any_limits(value: Any, bounds: ParseLimits, path: str) -> None:
    body = encode(value)
    for parse in (parse_request, parse_response):
        parsed = parse(body, path=path, limits=bounds)
        check(parsed, bounds)  # rows, fields per row, name lengths, redaction, string lengths


def mutate(body: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(body)
    for kind, where, byte in edits:
        at = where % (len(data) + 1)
        if kind == 0 and at < len(data):
            data[at] = byte
        elif kind == 1:
            data.insert(at, byte)
        elif kind == 2 and at < len(data):
            del data[at]
        elif kind == 3:
            del data[at:]
    return bytes(data)


@FUZZ
@given(
    shaped,
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    st.sampled_from([None, "application/json", "text/event-stream"]),
    limits,
)
def test_mutated_contract_bodies_never_break_the_parser(
    value: Any, edits: list[tuple[int, int, int]], content_type: str | None, bounds: ParseLimits
) -> None:
    body = mutate(encode(value), edits)
    for parse in (parse_request, parse_response):
        for path in ("/predict", "/v1/chat/completions"):
            check(parse(body, path=path, content_type=content_type, limits=bounds), bounds)


@FUZZ
@given(names.filter(bool), st.text(min_size=1, max_size=5), scalars, st.sampled_from(["", "x."]))
def test_a_cut_name_never_lands_on_a_redacted_one(
    redacted: str, tail: str, value: Any, parent: str
) -> None:
    """Found by this file: ``{"ab…": 1}`` cut to ``ab`` was stored though ``ab`` is redacted."""
    bounds = ParseLimits(
        max_name_length=len(parent + redacted), redact=frozenset({parent + redacted})
    )
    body = {redacted + tail: value} if not parent else {"x": {redacted + tail: value}}
    parsed = parse_request(encode(body), limits=bounds)
    check(parsed, bounds)
    assert parsed.rows == [{}] and parsed.redacted == 1
