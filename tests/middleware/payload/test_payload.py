from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferwatch.middleware.payload import parse as _payload
from inferwatch.middleware.payload.parse import Parsed, ParseLimits, parse_request, parse_response

STATUSES = {"ok", "empty", "not_json", "too_large", "parse_error", "unknown_shape"}
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
DEFAULT = ParseLimits()


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def check(parsed: Parsed, limits: ParseLimits = DEFAULT) -> None:
    """The promises every result keeps, whatever the body was."""
    assert isinstance(parsed, Parsed)
    assert parsed.status in STATUSES
    assert isinstance(parsed.rows, list)
    assert parsed.capped >= 0 and parsed.redacted >= 0
    if parsed.status != "ok":
        assert parsed.rows == []
        assert isinstance(parsed.detail, str) and len(parsed.detail) <= 80
    assert len(parsed.rows) <= limits.max_rows
    for row in parsed.rows:
        assert type(row) is dict
        assert len(row) <= limits.max_fields_per_row
        for name, value in row.items():
            assert type(name) is str and len(name) <= limits.max_name_length
            assert name not in limits.redact
            name.encode("utf-8")  # storable: no lone surrogates
            assert value is None or type(value) in (int, float, str, bool)
            if type(value) is str:
                assert len(value) <= 1024
                value.encode("utf-8")


def rows_of(parsed: Parsed) -> list[dict[str, object]]:
    check(parsed)
    assert parsed.status == "ok", parsed.detail
    return parsed.rows


# --- request shapes --------------------------------------------------------------------------

REQUEST_SHAPES = [
    ("record", {"a": 1, "b": "x"}, {}, [{"a": 1, "b": "x"}]),
    (
        "nested",
        {"user": {"age": 3, "geo": {"cc": "PT"}}},
        {},
        [{"user.age": 3, "user.geo.cc": "PT"}],
    ),
    (
        "list in record",
        {"emb": [0.5, 1.5], "items": [{"price": 2}, {"price": 3}]},
        {},
        [{"emb[0]": 0.5, "emb[1]": 1.5, "items[0].price": 2, "items[1].price": 3}],
    ),
    ("empty record", {}, {}, [{}]),
    ("list of records", [{"a": 1}, {"a": 2, "b": None}], {}, [{"a": 1}, {"a": 2, "b": None}]),
    ("instances records", {"instances": [{"a": 1}, {"b": True}]}, {}, [{"a": 1}, {"b": True}]),
    ("instances empty", {"instances": []}, {}, []),
    ("dataframe_records", {"dataframe_records": [{"a": 1}, {"a": 2}]}, {}, [{"a": 1}, {"a": 2}]),
    ("inputs records", {"inputs": [{"a": 1}, {"a": {"b": 2}}]}, {}, [{"a": 1}, {"a.b": 2}]),
    ("inputs lists", {"inputs": [[1, 2]]}, {}, [{"f0": 1, "f1": 2}]),
    (
        "instances lists",
        {"instances": [[1, 2], [3, 4]], "signature_name": "serving_default"},
        {},
        [{"f0": 1, "f1": 2}, {"f0": 3, "f1": 4}],
    ),
    ("top-level lists", [[1, "a"], [2, "b"]], {}, [{"f0": 1, "f1": "a"}, {"f0": 2, "f1": "b"}]),
    (
        "lists with columns",
        {"instances": [[1, 2, 3], [4, 5]]},
        {"columns": ["age", "income"]},
        [{"age": 1, "income": 2, "f2": 3}, {"age": 4, "income": 5}],
    ),
    ("nested list in list", [[1, [2, 3]]], {}, [{"f0": 1, "f1[0]": 2, "f1[1]": 3}]),
    ("scalar instances", {"instances": [1.5, 2.5]}, {}, [{"f0": 1.5}, {"f0": 2.5}]),
    ("scalar instances named", {"instances": ["a"]}, {"columns": ["text"]}, [{"text": "a"}]),
    (
        "dataframe_split",
        {"dataframe_split": {"index": [7, 8], "columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}},
        {"columns": ["ignored", "too"]},
        [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
    ),
    (
        "dataframe_split numeric columns",
        {"dataframe_split": {"columns": [0, 1], "data": [[1, 2]]}},
        {},
        [{"0": 1, "1": 2}],
    ),
    (
        "dataframe_split without columns",
        {"dataframe_split": {"data": [[1, 2]]}},
        {"columns": ["a"]},
        [{"a": 1, "f1": 2}],
    ),
    (
        "oip 2-d flat",
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}
            ]
        },
        {},
        [{"x[0]": 1, "x[1]": 2, "x[2]": 3}, {"x[0]": 4, "x[1]": 5, "x[2]": 6}],
    ),
    (
        "oip 2-d nested",
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]},
        {},
        [{"x[0]": 1, "x[1]": 2}, {"x[0]": 3, "x[1]": 4}],
    ),
    (
        "oip 1-d",
        {"inputs": [{"name": "age", "shape": [3], "datatype": "INT64", "data": [30, 40, 50]}]},
        {},
        [{"age": 30}, {"age": 40}, {"age": 50}],
    ),
    (
        "oip n x 1 is one column",
        {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [[1], [2]]}]},
        {},
        [{"x": 1}, {"x": 2}],
    ),
    (
        "oip tensor_columns",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        {"tensor_columns": {"x": ["age", "income"]}},
        [{"age": 1, "income": 2, "x[2]": 3}],
    ),
    (
        "oip several tensors and bytes",
        {
            "inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hi", "yo"]},
                {"name": "ok", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            ]
        },
        {},
        [
            {"x[0]": 1, "x[1]": 2, "text": "hi", "ok": True},
            {"x[0]": 3, "x[1]": 4, "text": "yo", "ok": False},
        ],
    ),
    (
        "oip 3-d flattens trailing dims",
        {
            "inputs": [
                {"name": "img", "shape": [2, 2, 2], "data": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}
            ]
        },
        {},
        [
            {"img[0]": 1, "img[1]": 2, "img[2]": 3, "img[3]": 4},
            {"img[0]": 5, "img[1]": 6, "img[2]": 7, "img[3]": 8},
        ],
    ),
    (
        "oip without shape",
        {"inputs": [{"name": "x", "data": [[1, 2], [3, 4]]}, {"name": "y", "data": [5, 6]}]},
        {},
        [{"x[0]": 1, "x[1]": 2, "y": 5}, {"x[0]": 3, "x[1]": 4, "y": 6}],
    ),
    (
        "oip short data keeps whole rows",
        {"inputs": [{"name": "x", "shape": [3, 2], "data": [1, 2, 3]}]},
        {},
        [{"x[0]": 1, "x[1]": 2}],
    ),
    (
        "hf text inputs stay a record",
        {"inputs": "hello", "parameters": {"t": 1}},
        {},
        [{"inputs": "hello", "parameters.t": 1}],
    ),
    (
        "hostile names kept",
        {"a'; DROP TABLE features; --": 1, '"q"': 2, "<script>x</script>": 3},
        {},
        [{"a'; DROP TABLE features; --": 1, '"q"': 2, "<script>x</script>": 3}],
    ),
]


@pytest.mark.parametrize(
    ("body", "kwargs", "expected"),
    [case[1:] for case in REQUEST_SHAPES],
    ids=[case[0] for case in REQUEST_SHAPES],
)
def test_request_shapes(
    body: Any, kwargs: dict[str, Any], expected: list[dict[str, object]]
) -> None:
    assert rows_of(parse_request(dumps(body), **kwargs)) == expected


OPENAI_REQUESTS = [
    (
        CHAT,
        {
            "model": "llama-3",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hello"}, {"type": "image_url"}],
                },
                {"role": "assistant", "content": None, "tool_calls": []},
            ],
            "max_completion_tokens": 64,
            "temperature": 0.2,
            "stream": True,
        },
        {
            "model": "llama-3",
            "message_count": 3,
            "prompt_chars": 14,
            "max_tokens": 64,
            "temperature": 0.2,
        },
    ),
    (
        "/openai/v1/chat/completions/?api-version=1",
        {"messages": [], "max_tokens": 5, "max_completion_tokens": 9},
        {"message_count": 0, "prompt_chars": 0, "max_tokens": 5},
    ),
    (
        COMPLETIONS,
        {"model": "gpt2", "prompt": "Once upon", "max_tokens": 16, "temperature": 0},
        {"model": "gpt2", "prompt_chars": 9, "max_tokens": 16, "temperature": 0},
    ),
    (COMPLETIONS, {"prompt": ["ab", "cde"]}, {"prompt_chars": 5}),
    (COMPLETIONS, {"model": "m", "prompt": [1, 2, 3]}, {"model": "m", "prompt_chars": 0}),
]


@pytest.mark.parametrize(("path", "body", "expected"), OPENAI_REQUESTS)
def test_openai_requests(path: str, body: Any, expected: dict[str, object]) -> None:
    assert rows_of(parse_request(dumps(body), path=path)) == [expected]


@pytest.mark.parametrize("body", [[{"model": "m"}], {"stream": True}, "hi"])
def test_openai_request_without_fields_is_unknown(body: Any) -> None:
    parsed = parse_request(dumps(body), path=CHAT)
    check(parsed)
    assert parsed.status == "unknown_shape"


def test_utf8_byte_order_mark_is_skipped() -> None:
    assert rows_of(parse_request(b'\xef\xbb\xbf{"a": 1}')) == [{"a": 1}]
    assert math.isnan(rows_of(parse_response(b"\xef\xbb\xbf[NaN]"))[0]["prediction"])  # type: ignore[arg-type]


def test_bools_stay_bools() -> None:
    for parsed in (
        parse_request(b'{"a": true, "b": false, "n": 1}'),
        parse_request(b'{"a": true, "nested": {"b": false}}'),
        parse_request(b"[[true, false]]"),
        parse_request(b'{"inputs": [{"name": "b", "shape": [2], "data": [true, false]}]}'),
        parse_response(b'{"predictions": [true, false]}'),
    ):
        for row in rows_of(parsed):
            assert all(type(v) in (bool, int) for v in row.values())
            assert any(type(v) is bool for v in row.values())


# --- response shapes -------------------------------------------------------------------------

RESPONSE_SHAPES = [
    (
        "scalar predictions",
        {"predictions": [0.1, 0.9]},
        {},
        [{"prediction": 0.1}, {"prediction": 0.9}],
    ),
    (
        "dict predictions",
        {"predictions": [{"label": "cat", "scores": {"cat": 0.9}}]},
        {},
        [{"prediction.label": "cat", "prediction.scores.cat": 0.9}],
    ),
    (
        "list predictions",
        {"predictions": [[0.2, 0.8], [0.6, 0.4]]},
        {},
        [
            {"prediction[0]": 0.2, "prediction[1]": 0.8},
            {"prediction[0]": 0.6, "prediction[1]": 0.4},
        ],
    ),
    (
        "mixed predictions",
        {"predictions": [1, {"a": 2}]},
        {},
        [{"prediction": 1}, {"prediction.a": 2}],
    ),
    ("bare list", [1, 0, 1], {}, [{"prediction": 1}, {"prediction": 0}, {"prediction": 1}]),
    ("bare list of records", [{"y": 1}, {"y": 0}], {}, [{"prediction.y": 1}, {"prediction.y": 0}]),
    (
        "column-oriented predictions",
        {"predictions": {"label": ["a", "b"], "score": [0.5, 0.7]}},
        {},
        [
            {"prediction.label": "a", "prediction.score": 0.5},
            {"prediction.label": "b", "prediction.score": 0.7},
        ],
    ),
    (
        "predictions object",
        {"predictions": {"label": "a", "scores": [1, 2]}},
        {},
        [{"prediction.label": "a", "prediction.scores[0]": 1, "prediction.scores[1]": 2}],
    ),
    ("scalar prediction", {"predictions": 3}, {}, [{"prediction": 3}]),
    (
        "oip 1-d output",
        {
            "model_name": "m",
            "outputs": [{"name": "y", "shape": [2], "datatype": "FP32", "data": [0.1, 0.2]}],
        },
        {},
        [{"y": 0.1}, {"y": 0.2}],
    ),
    (
        "oip 2-d output",
        {
            "outputs": [
                {
                    "name": "probs",
                    "shape": [2, 2],
                    "datatype": "FP32",
                    "data": [[0.1, 0.9], [0.7, 0.3]],
                }
            ]
        },
        {},
        [{"probs[0]": 0.1, "probs[1]": 0.9}, {"probs[0]": 0.7, "probs[1]": 0.3}],
    ),
    (
        "oip output tensor_columns",
        {"outputs": [{"name": "probs", "shape": [1, 2], "data": [0.1, 0.9]}]},
        {"tensor_columns": {"probs": ["p_no", "p_yes"]}},
        [{"p_no": 0.1, "p_yes": 0.9}],
    ),
    ("other object", {"score": 0.5, "meta": {"v": 2}}, {}, [{"score": 0.5, "meta.v": 2}]),
]


@pytest.mark.parametrize(
    ("body", "kwargs", "expected"),
    [case[1:] for case in RESPONSE_SHAPES],
    ids=[case[0] for case in RESPONSE_SHAPES],
)
def test_response_shapes(
    body: Any, kwargs: dict[str, Any], expected: list[dict[str, object]]
) -> None:
    assert rows_of(parse_response(dumps(body), **kwargs)) == expected


OPENAI_RESPONSES = [
    (
        CHAT,
        {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello!"},
                    "finish_reason": "stop",
                },
                {
                    "index": 1,
                    "message": {"role": "assistant", "content": "Hi"},
                    "finish_reason": "length",
                },
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        },
        {
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "finish_reason": "stop",
            "completion_chars": 8,
        },
    ),
    (
        CHAT,
        {
            "choices": [
                {"message": {"content": None, "tool_calls": [{}]}, "finish_reason": "tool_calls"}
            ]
        },
        {"finish_reason": "tool_calls", "completion_chars": 0},
    ),
    (
        COMPLETIONS,
        {
            "choices": [{"text": "there was", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2},
        },
        {"prompt_tokens": 2, "finish_reason": "length", "completion_chars": 9},
    ),
]


@pytest.mark.parametrize(("path", "body", "expected"), OPENAI_RESPONSES)
def test_openai_responses(path: str, body: Any, expected: dict[str, object]) -> None:
    assert rows_of(parse_response(dumps(body), path=path)) == [expected]


def test_openai_error_body_is_unknown_shape() -> None:
    parsed = parse_response(b'{"error": {"message": "rate limited"}}', path=CHAT)
    check(parsed)
    assert parsed.status == "unknown_shape"


def sse(*chunks: object, newline: str = "\n") -> bytes:
    text = [c if isinstance(c, str) else json.dumps(c, ensure_ascii=False) for c in chunks]
    lines = [f"data: {t}{newline}{newline}" for t in text]
    return "".join(lines).encode()


def chat_chunk(content: str | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "object": "chat.completion.chunk",
        "choices": [{"delta": delta, "finish_reason": finish}],
        **extra,
    }


USAGE = {"prompt_tokens": 11, "completion_tokens": 4}

SSE_CASES = [
    (
        "chat with usage",
        CHAT,
        sse(
            chat_chunk(None, role="assistant"),
            chat_chunk("Hel"),
            chat_chunk("lo!", "stop", usage=None),
            {"choices": [], "usage": USAGE},
            "[DONE]",
        ),
        {
            "prompt_tokens": 11,
            "completion_tokens": 4,
            "finish_reason": "stop",
            "completion_chars": 6,
        },
    ),
    (
        "chat without usage, CRLF",
        CHAT,
        sse(
            chat_chunk("a\u2028b"),
            chat_chunk(""),
            chat_chunk(None, "length"),
            "[DONE]",
            newline="\r\n",
        ),
        {"finish_reason": "length", "completion_chars": 3},
    ),
    (
        "completions with usage",
        COMPLETIONS,
        sse(
            {"choices": [{"text": "Once", "finish_reason": None}]},
            {"choices": [{"text": " upon", "finish_reason": "stop"}], "usage": USAGE},
            "[DONE]",
        ),
        {
            "prompt_tokens": 11,
            "completion_tokens": 4,
            "finish_reason": "stop",
            "completion_chars": 9,
        },
    ),
    (
        "completions without usage",
        COMPLETIONS,
        sse(
            {"choices": [{"text": "abc", "finish_reason": None}]},
            {"choices": [{"text": "d", "finish_reason": "stop"}]},
        ),
        {"finish_reason": "stop", "completion_chars": 4},
    ),
    (
        "events, comments, multi-line data",
        CHAT,
        b": keep-alive\n\nevent: message\nid: 1\n"
        b'data: {"choices":\ndata: [{"delta": {"content": "xy"}}]}\n\ndata: [DONE]\n\n',
        {"completion_chars": 2},
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "expected"), [c[1:] for c in SSE_CASES], ids=[c[0] for c in SSE_CASES]
)
@pytest.mark.parametrize("content_type", ["text/event-stream; charset=utf-8", None])
def test_sse_streams(
    path: str, body: bytes, expected: dict[str, object], content_type: str | None
) -> None:
    if content_type is None:  # then the body itself must say it is a stream
        body = body[body.index(b"data:") :]
    parsed = parse_response(body, path=path, content_type=content_type)
    assert rows_of(parsed) == [expected]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"data: {oops\n\ndata: [DONE]\n\n", "parse_error"),
        (b'data: {"id": 1}\n\n', "unknown_shape"),
        (b": just a comment\n\n", "not_json"),
    ],
)
def test_sse_failures(body: bytes, status: str) -> None:
    parsed = parse_response(body, path=CHAT, content_type="text/event-stream")
    check(parsed)
    assert parsed.status == status


def test_event_stream_content_type_with_json_body_is_json() -> None:
    parsed = parse_response(b'{"predictions": [1]}', content_type="text/event-stream")
    assert rows_of(parsed) == [{"prediction": 1}]


# --- statuses --------------------------------------------------------------------------------

NON_OK = [
    (b'{"a": 1}', {"truncated": True}, "too_large"),
    (b"", {}, "empty"),
    (b" \r\n\t ", {}, "empty"),
    (b"hello", {}, "not_json"),
    (b"<html>oops</html>", {}, "not_json"),
    (b"\xff\xfe\x00", {}, "not_json"),
    (b"a=1&b=2", {"content_type": "application/x-www-form-urlencoded"}, "not_json"),
    (b'data: {"a": 1}\n\n', {}, "not_json"),
    (b'{"a": 1', {}, "parse_error"),
    (b"  [1, 2,", {}, "parse_error"),
    (b'{"a": "\xff"}', {}, "parse_error"),
    (b'{"a": 1} {"b": 2}', {}, "parse_error"),
    (b"3", {}, "unknown_shape"),
    (b'"text"', {}, "unknown_shape"),
    (b"null", {}, "unknown_shape"),
    (b"true", {}, "unknown_shape"),
    (b"[1, 2, 3]", {}, "unknown_shape"),
    (b'[{"a": 1}, 2]', {}, "unknown_shape"),
    (b"[NaN, Infinity]", {}, "unknown_shape"),
]


@pytest.mark.parametrize(("body", "kwargs", "status"), NON_OK)
def test_request_statuses(body: bytes, kwargs: dict[str, Any], status: str) -> None:
    parsed = parse_request(body, **kwargs)
    check(parsed)
    assert parsed.status == status


@pytest.mark.parametrize(
    ("body", "kwargs", "status"),
    [
        (b'{"predictions": [1]}', {"truncated": True}, "too_large"),
        (b"data: [DONE]\n\n", {"truncated": True}, "too_large"),
        (b"\n", {}, "empty"),
        (b"Internal Server Error", {}, "not_json"),
        (b'{"predictions": [', {}, "parse_error"),
        (b"null", {}, "unknown_shape"),
    ],
)
def test_response_statuses(body: bytes, kwargs: dict[str, Any], status: str) -> None:
    parsed = parse_response(body, **kwargs)
    check(parsed)
    assert parsed.status == status


def test_detail_is_short_and_holds_no_payload() -> None:
    secret = b"s3cr3t-token-" * 50
    for parsed in (
        parse_request(b"{" + secret),
        parse_request(secret),
        parse_response(b"[" + secret),
    ):
        check(parsed)
        assert parsed.detail and b"s3cr3t" not in parsed.detail.encode()


def test_an_internal_bug_becomes_a_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("x" * 500)

    monkeypatch.setattr(_payload, "_record", broken)
    parsed = parse_request(b'{"a": 1}')
    check(parsed)
    assert parsed.status == "parse_error" and parsed.detail.startswith("ValueError")


# --- values ----------------------------------------------------------------------------------


def test_nan_and_infinity_stay_floats() -> None:
    (row,) = rows_of(
        parse_request(b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1, "e": "NaN"}')
    )
    assert math.isnan(row["a"]) and row["b"] == math.inf and row["c"] == -math.inf  # type: ignore[arg-type]
    assert row["d"] == 1 and row["e"] == "NaN"
    rows = rows_of(parse_request(b'{"instances": [[1.0, NaN], [Infinity, 2]]}'))
    assert math.isnan(rows[0]["f1"]) and rows[1]["f0"] == math.inf  # type: ignore[arg-type]
    rows = rows_of(parse_response(b'{"predictions": [NaN, -Infinity]}'))
    assert math.isnan(rows[0]["prediction"]) and rows[1]["prediction"] == -math.inf  # type: ignore[arg-type]


def test_fallback_numbers_and_strings_are_storable() -> None:
    # orjson refuses NaN, so these go through the stdlib decoder.
    body = b'{"n": NaN, "big": 123456789012345678901234567890, "huge": ' + b"9" * 5000 + b"}"
    (row,) = rows_of(parse_request(body))
    assert row["big"] == 1.2345678901234568e29 and row["huge"] == math.inf
    (row,) = rows_of(
        parse_request(b'{"n": NaN, "u64": 18446744073709551615, "s\\ud800": "a\\udc00b"}')
    )
    assert row["u64"] == 18446744073709551615
    assert "s?" in row and row["s?"] == "a?b"


@pytest.mark.parametrize("nan", [b"1", b"NaN"], ids=["orjson", "fallback"])
@pytest.mark.parametrize("open_close", [(b"[", b"]"), (b'{"a":', b"}")], ids=["arrays", "objects"])
@pytest.mark.parametrize("parse", [parse_request, parse_response])
def test_10000_levels_of_nesting(nan: bytes, open_close: tuple[bytes, bytes], parse: Any) -> None:
    body = open_close[0] * 10_000 + nan + open_close[1] * 10_000
    parsed = parse(body)
    check(parsed)
    assert parsed.status == "parse_error"


@pytest.mark.parametrize("nan", [b"1", b"NaN"], ids=["orjson", "fallback"])
def test_moderate_nesting_is_cut_at_the_depth_limit(nan: bytes) -> None:
    body = b'{"a":' * 300 + nan + b"}" * 300
    parsed = parse_request(body)
    check(parsed)
    assert parsed.status == "ok" and parsed.rows == [{}] and parsed.capped == 1
    deep = {"inputs": [{"name": "x", "data": json.loads("[" * 60 + "1" + "]" * 60)}]}
    parsed = parse_request(dumps(deep))
    check(parsed)
    assert parsed.capped >= 1


def test_long_strings_are_cut() -> None:
    parsed = parse_request(dumps({"text": "x" * 5000, "ok": "y" * 1024}))
    assert rows_of(parsed) == [{"text": "x" * 1024, "ok": "y" * 1024}]
    assert parsed.capped == 1


def test_10kb_names_are_cut() -> None:
    long = "n" * 10_000
    parsed = parse_request(dumps({long: 1, "short": 2}))
    assert rows_of(parsed) == [{"n" * 256: 1, "short": 2}] and parsed.capped == 1
    parsed = parse_request(dumps({long: {"a": 1, "b": 2}}))
    assert rows_of(parsed) == [{"n" * 256: 2}] and parsed.capped == 2
    parsed = parse_request(dumps({"instances": [[1]]}), columns=[long])
    assert rows_of(parsed) == [{"n" * 256: 1}] and parsed.capped == 1
    parsed = parse_request(dumps({"a": 1, "b" * 20: 2}), limits=ParseLimits(max_name_length=10))
    assert rows_of(parsed) == [{"a": 1, "b" * 10: 2}] and parsed.capped == 1


def test_100000_keys_are_capped() -> None:
    body = dumps({f"k{i}": i for i in range(100_000)})
    parsed = parse_request(body)
    (row,) = rows_of(parsed)
    assert list(row) == [f"k{i}" for i in range(1000)]
    assert parsed.capped == 99_000
    parsed = parse_request(body, limits=ParseLimits(max_fields_per_row=10))
    assert len(parsed.rows[0]) == 10 and parsed.capped == 99_990


def test_wide_lists_and_tensors_are_capped() -> None:
    parsed = parse_request(dumps([list(range(5000))]))
    assert len(rows_of(parsed)[0]) == 1000 and parsed.capped == 4000
    tensor = {"name": "x", "shape": [2, 3000], "data": list(range(6000))}
    parsed = parse_request(dumps({"inputs": [tensor]}))
    rows = rows_of(parsed)
    assert [len(r) for r in rows] == [1000, 1000] and rows[1]["x[999]"] == 3999
    assert parsed.capped == 4000


def test_max_rows() -> None:
    limits = ParseLimits(max_rows=3)
    cases = [
        parse_request(dumps({"instances": [{"a": i} for i in range(10)]}), limits=limits),
        parse_request(dumps([[i] for i in range(10)]), limits=limits),
        parse_request(
            dumps({"dataframe_split": {"columns": ["a"], "data": [[i] for i in range(10)]}}),
            limits=limits,
        ),
        parse_request(
            dumps(
                {
                    "inputs": [
                        {"name": n, "shape": [10], "data": list(range(10))} for n in ("a", "b")
                    ]
                }
            ),
            limits=limits,
        ),
        parse_response(dumps({"predictions": list(range(10))}), limits=limits),
        parse_response(dumps({"predictions": {"a": list(range(10))}}), limits=limits),
        parse_response(
            dumps({"outputs": [{"name": "y", "shape": [10, 1], "data": list(range(10))}]}),
            limits=limits,
        ),
    ]
    for parsed in cases:
        check(parsed, limits)
        assert parsed.status == "ok" and len(parsed.rows) == 3 and parsed.capped == 7


def test_redaction_of_nested_fields() -> None:
    limits = ParseLimits(redact=frozenset({"ssn", "user.email", "emb", "card"}))
    body = {
        "user": {"ssn": "1", "email": "a@b", "age": 3, "card": {"number": 4, "cvv": 1}},
        "ssn": "2",
        "emb": [0.1, 0.2],
        "people": [{"ssn": "3", "name": "x"}],
        "email": "kept: only user.email is named",
    }
    parsed = parse_request(dumps(body), limits=limits)
    assert rows_of(parsed) == [
        {"user.age": 3, "people[0].name": "x", "email": "kept: only user.email is named"}
    ]
    assert parsed.redacted == 6


def test_redaction_in_every_shape() -> None:
    limits = ParseLimits(redact=frozenset({"ssn", "x[1]", "secret", "prediction.score"}))
    parsed = parse_request(
        dumps({"instances": [{"ssn": 1, "a": 2}, {"ssn": 3, "a": 4}]}), limits=limits
    )
    assert rows_of(parsed) == [{"a": 2}, {"a": 4}] and parsed.redacted == 2
    parsed = parse_request(dumps([[1, 2]]), columns=["ssn", "b"], limits=limits)
    assert rows_of(parsed) == [{"b": 2}] and parsed.redacted == 1
    tensors = [
        {"name": "x", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "secret", "shape": [1], "data": [9]},
    ]
    parsed = parse_request(dumps({"inputs": tensors}), limits=limits)
    assert rows_of(parsed) == [{"x[0]": 1, "x[2]": 3}] and parsed.redacted == 2
    parsed = parse_response(dumps({"predictions": [{"label": 1, "score": 0.5}]}), limits=limits)
    assert rows_of(parsed) == [{"prediction.label": 1}] and parsed.redacted == 1


# --- never raises ----------------------------------------------------------------------------

PATHS = ["/", "/predict", CHAT, COMPLETIONS, "/v2/models/m/infer"]
CONTENT_TYPES = [None, "application/json", "text/event-stream"]
SMALL = ParseLimits(
    max_fields_per_row=4, max_name_length=6, max_rows=3, redact=frozenset({"a", "x[0]"})
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)
shaped = st.one_of(
    json_values,
    st.builds(lambda v: {"instances": v}, json_values),
    st.builds(lambda v: {"predictions": v}, json_values),
    st.builds(
        lambda c, d: {"dataframe_split": {"columns": c, "data": d}}, json_values, json_values
    ),
    st.builds(
        lambda name, shape, data, key: {key: [{"name": name, "shape": shape, "data": data}]},
        json_values,
        json_values | st.lists(st.integers(-2, 5), max_size=4),
        json_values,
        st.sampled_from(["inputs", "outputs"]),
    ),
    st.builds(
        lambda m, p, c: {"messages": m, "prompt": p, "choices": c, "usage": c},
        json_values,
        json_values,
        json_values,
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300), st.sampled_from(PATHS), st.sampled_from(CONTENT_TYPES), st.booleans()
)
def test_arbitrary_bytes_never_raise(
    body: bytes, path: str, content_type: str | None, small: bool
) -> None:
    limits = SMALL if small else DEFAULT
    for parse in (parse_request, parse_response):
        check(parse(body, path=path, content_type=content_type, limits=limits), limits)


@settings(max_examples=300, deadline=None)
@given(shaped, st.sampled_from(PATHS), st.booleans(), st.booleans())
def test_arbitrary_json_never_raises(value: Any, path: str, small: bool, stream: bool) -> None:
    limits = SMALL if small else DEFAULT
    body = json.dumps(value).encode()  # NaN and Infinity included: exercises the fallback
    if stream:
        body = b"data: " + body + b"\n\ndata: [DONE]\n\n"
    for parse in (parse_request, parse_response):
        check(parse(body, path=path, limits=limits), limits)
    columns = value if isinstance(value, list) else None
    check(
        parse_request(body, columns=columns, tensor_columns={"x": ["q"] * 3}, limits=limits), limits
    )
