"""Turn captured request and response bodies into feature rows.

Runs on the background writer thread, never on the request path, so nothing here raises: every
failure becomes a status on the returned ``Parsed``. CONTRACT.md, "How payloads become feature
rows", lists the shapes and their names.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Callable, Iterable, KeysView, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .binary_tensors import split_binary

__all__ = ["NAMING", "ParseLimits", "Parsed", "is_openai", "parse_request", "parse_response"]

NAMING = ("by_name", "positional", "metadata", "as_sent")
"""How a request's columns got their names: the payload's own names, the baseline's column order
by position, the model server's metadata, or names made up from positions (``f0``, ``x[0]``)."""

_MAX_DEPTH = 32
_MAX_STR = 1024
_MAX_DETAIL = 80
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1
_LOOK = frozenset((dict, list, str))  # the value types that may need work before storing
_GZIP = b"\x1f\x8b"
_OPENAI = (("/v1/chat/completions", True), ("/v1/completions", False))

_Row = dict[str, object]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what one body may produce; whatever they cut is counted in ``Parsed.capped``."""

    max_fields_per_row: int = 1000
    max_name_length: int = 256
    max_rows: int = 10_000
    redact: frozenset[str] = frozenset()
    max_unzipped: int = 16 * 2**20  # most bytes a gzip-encoded body may open to


@dataclass(slots=True)
class Parsed:
    """Rows from one body, and why there are none when ``status`` is not ``"ok"``."""

    status: str
    rows: list[dict[str, object]]
    capped: int = 0
    redacted: int = 0
    detail: str | None = None
    names: str | None = None  # how input columns were named: see ``NAMING``


class _Ctx:
    """Limits and counters for one body, and the positional names (columns, then ``f{i}``).

    Counters and notes start as class attributes: one is set on the instance only when it
    changes, which most bodies never do (the writer makes two of these per capture).
    """

    capped = redacted = 0
    keys_ok: KeysView[str] | None = None
    names: list[str] = []  # never extended in place: add_names sets a new list
    names_ok = True  # no positional name is redacted or too long
    naming: str | None = None
    given = 0  # positional names that came from the caller (the baseline's order)

    def __init__(self, limits: ParseLimits, columns: Sequence[object] | None = None) -> None:
        self.max_fields, self.max_name = limits.max_fields_per_row, limits.max_name_length
        self.max_rows, self.redact = limits.max_rows, limits.redact
        self.max_unzipped = limits.max_unzipped
        if columns:
            self.add_names(columns)
            self.given = len(self.names)

    def named(self, how: str) -> None:
        """Note how columns were named; made-up names outweigh every other way."""
        if self.naming is None or how == "as_sent":
            self.naming = how

    def add_names(self, names: Iterable[object]) -> None:
        new = [n if n.__class__ is str else str(n) for n in names]
        self.names = self.names + new
        self.names_ok = self.names_ok and self.plain(new)

    def plain(self, names: list[str]) -> bool:
        return not any(len(n) > self.max_name or n in self.redact for n in names)

    def fits(self, keys: KeysView[str]) -> bool:
        """Whether record keys need no cutting or redaction; remembered, as batches repeat them."""
        if max(map(len, keys), default=0) > self.max_name or not self.redact.isdisjoint(keys):
            return False
        self.keys_ok = keys
        return True

    def positional(self, n: int) -> list[str]:
        if len(self.names) < n:
            self.add_names(f"f{i}" for i in range(len(self.names), n))
        return self.names

    def cap_rows(self, items: list[Any]) -> list[Any]:
        if len(items) <= self.max_rows:
            return items
        self.capped += len(items) - self.max_rows
        return items[: self.max_rows]


def _clean(values: Iterable[Any]) -> bool:
    """True when every value is a scalar that can be stored as it is."""
    for v in values:  # noqa: SIM110 - the plain loop is faster than all() over a generator
        if type(v) in _LOOK and (type(v) is not str or len(v) > _MAX_STR):
            return False
    return True


def _put(row: _Row, name: str, key: str | None, v: Any, depth: int, cx: _Ctx) -> None:
    """Add ``v`` under ``name``, flattening containers; ``key`` is the last key segment."""
    if cx.redact and (name in cx.redact or key in cx.redact):
        cx.redacted += 1
        return
    t = v.__class__
    if t is dict or t is list:
        if depth >= _MAX_DEPTH:
            cx.capped += 1
            return
        name = name[: cx.max_name]  # children are cut anyway; this bounds the copying
        if t is dict:
            for k, sub in v.items():
                _put(row, f"{name}.{k}", k, sub, depth + 1, cx)
        else:
            for i, sub in enumerate(v):
                _put(row, f"{name}[{i}]", None, sub, depth + 1, cx)
        return
    if len(name) > cx.max_name:
        name = name[: cx.max_name]
        cx.capped += 1
        if name in cx.redact:  # cut, a long name must not land on a redacted one
            cx.redacted += 1
            return
    if len(row) >= cx.max_fields and name not in row:
        cx.capped += 1
    elif t is str and len(v) > _MAX_STR:
        row[name] = v[:_MAX_STR]
        cx.capped += 1
    else:
        row[name] = v


def _record(obj: dict[str, Any], cx: _Ctx, prefix: str = "") -> _Row:
    """One row from an object; a flat, clean object is used as is (orjson made it for us)."""
    if len(obj) <= cx.max_fields and not (prefix and cx.redact) and _clean(obj.values()):
        keys = obj.keys()
        if not prefix and (keys == cx.keys_ok or cx.fits(keys)):
            return obj
        if prefix and max(map(len, keys), default=0) < cx.max_name - len(prefix):
            return {f"{prefix}.{k}": v for k, v in obj.items()}
    row: _Row = {}
    if prefix:
        _put(row, prefix, prefix, obj, 0, cx)
    for k, v in () if prefix else obj.items():
        _put(row, k, k, v, 1, cx)
    return row


def _positional(items: list[Any], cx: _Ctx) -> _Row:
    names = cx.positional(len(items))
    if cx.names_ok and len(items) <= cx.max_fields and _clean(items):
        return dict(zip(names, items, strict=False))
    row: _Row = {}
    for name, v in zip(names, items, strict=False):
        _put(row, name, name, v, 1, cx)
    return row


def _instances(items: list[Any], cx: _Ctx, scalars: bool) -> list[_Row] | None:
    """A row per element; a scalar element is a one-feature instance only inside a batch key."""
    rows: list[_Row] = []
    widest, records = 0, False  # what tells how the columns were named, noted once
    for it in cx.cap_rows(items):
        if type(it) is dict:
            rows.append(_record(it, cx))
            records = True
        elif type(it) is list or scalars:
            one = it if type(it) is list else [it]
            widest = max(widest, len(one))
            rows.append(_positional(one, cx))
        else:
            return None
    if records:
        cx.named("by_name")
    if widest:
        cx.named("positional" if widest <= cx.given else "as_sent")
    return rows


def _split(split: dict[str, Any], cx: _Ctx) -> list[_Row] | None:
    data, columns = split.get("data"), split.get("columns")
    if data.__class__ is not list:
        return None
    if columns.__class__ is list:  # the body's own column names win over the baseline's
        cx.names, cx.names_ok = [], True
        cx.add_names(columns)
        cx.given = len(cx.names)
    kept = cx.cap_rows(data)
    widest = max((len(r) if r.__class__ is list else 1 for r in kept), default=0)
    if kept:
        own = "by_name" if columns.__class__ is list else "positional"
        cx.named(own if widest <= cx.given else "as_sent")
    return [_positional(r if r.__class__ is list else [r], cx) for r in kept]


def _flat(data: list[Any], cx: _Ctx) -> list[Any]:
    """Row-major flattening of nested lists, iterative so that depth cannot exhaust the stack."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if v.__class__ is not list:
                out.append(v)
            elif len(stack) < _MAX_DEPTH:
                stack.append(iter(v))
                break
            else:
                cx.capped += 1
        else:
            stack.pop()
    return out


def _is_tensors(v: Any) -> bool:
    return v.__class__ is list and bool(v) and all(
        e.__class__ is dict and "name" in e and "data" in e for e in v
    )  # fmt: skip


def _tensors(
    specs: list[dict[str, Any]],
    tcols: Mapping[str, Sequence[str]] | None,
    cx: _Ctx,
    inputs: bool = False,
) -> list[_Row]:
    """Open Inference Protocol tensors, merged into one row per batch element.

    A tensor of shape [N] or [N, 1] is one column named by the tensor; [N, K] gives K columns,
    named by ``tcols`` (model metadata), else, for the only input tensor of a request whose K
    is the baseline's feature count, by the baseline's column order, else ``name[i]``.
    """
    rows: list[_Row] = []
    dropped = 0  # rows beyond max_rows, counted once however many tensors they span
    for spec in specs:
        tname, data, shape = spec["name"], spec["data"], spec.get("shape")
        tname = tname if tname.__class__ is str else str(tname)
        data = data if data.__class__ is list else [data]
        nested = any(d.__class__ is list for d in data)
        flat = _flat(data, cx) if nested else data
        if shape.__class__ is list and all(d.__class__ is int and d >= 0 for d in shape):
            n, f = (shape[0], math.prod(shape[1:])) if shape else (1, 1)
        else:  # no usable shape: the nesting gives it
            n = len(data) if nested else len(flat)
            f = len(flat) // n if nested and n else 1
        if f <= 0:
            continue
        n = min(n, len(flat) // f)
        dropped = max(dropped, n - cx.max_rows)
        n = min(n, cx.max_rows)
        given = (tcols or {}).get(tname) or ()
        if given:
            names = [
                str(given[i]) if i < len(given) else f"{tname}[{i}]"
                for i in range(min(f, cx.max_fields))
            ]
            cx.named("metadata")
        elif inputs and len(specs) == 1 and f == cx.given and tname not in cx.names[:f]:
            names = cx.names[: min(f, cx.max_fields)]
            cx.named("positional")
        elif f == 1:
            names = [tname]
            cx.named("by_name")
        else:
            names = [f"{tname}[{i}]" for i in range(min(f, cx.max_fields))]
            cx.named("as_sent")
        cx.capped += (f - len(names)) * n
        k = len(names)
        fast = tname not in cx.redact and cx.plain(names) and _clean(flat)
        rows += [{} for _ in range(n - len(rows))]
        for i in range(n):
            row, base = rows[i], i * f
            if fast and len(row) + k <= cx.max_fields:
                row.update(zip(names, flat[base : base + k], strict=False))
            else:
                for j, m in enumerate(names):
                    _put(row, m, tname, flat[base + j], 1, cx)
    cx.capped += dropped
    return rows


def _columnar(obj: dict[str, Any], prefix: str, cx: _Ctx) -> list[_Row]:
    """Column-oriented ``{"col": [v0, v1, ...]}`` as rows; any other object is one record."""
    cols = list(obj.values())
    if not cols or not all(c.__class__ is list for c in cols):
        return [_record(obj, cx, prefix.rstrip("."))]
    cx.named("by_name")
    longest = max(map(len, cols))
    rows: list[_Row] = [{} for _ in range(min(longest, cx.max_rows))]
    cx.capped += longest - len(rows)
    for col, vals in obj.items():
        for row, v in zip(rows, vals, strict=False):
            _put(row, f"{prefix}{col}", col, v, 1, cx)
    return rows


def _predictions(p: Any, cx: _Ctx) -> list[_Row]:
    if p.__class__ is dict:
        return _columnar(p, "prediction.", cx)
    p = cx.cap_rows(p if p.__class__ is list else [p])
    if p and all(v.__class__ is list and len(v) == 1 for v in p):
        p = [v[0] for v in p]  # shape [N, 1]: one column, as a tensor of that shape gives
    if "prediction" not in cx.redact and cx.max_name >= len("prediction") and _clean(p):
        return [{"prediction": v} for v in p]
    rows = []
    for v in p:
        row: _Row = {}
        if v.__class__ is dict:
            row = _record(v, cx, "prediction")
        else:
            _put(row, "prediction", "prediction", v, 0, cx)
        rows.append(row)
    return rows


def _chars(content: Any) -> int:
    """Characters of a string, a list of strings, or a list of ``{"type": "text"}`` parts."""
    if content.__class__ is str:
        return len(content)
    total = 0
    for part in content if content.__class__ is list else ():
        text = part.get("text") if part.__class__ is dict else part
        total += len(text) if text.__class__ is str else 0
    return total


def _scalars(cx: _Ctx, **fields: Any) -> _Row:
    row: _Row = {}
    for name, v in fields.items():
        if v is not None and v.__class__ is not dict and v.__class__ is not list:
            _put(row, name, name, v, 1, cx)
    return row


def _class_scores(obj: dict[str, Any], cx: _Ctx) -> list[_Row] | None:
    """TorchServe's classifier answer ``{"tabby": 0.47, "tiger_cat": 0.46, ...}``: the most
    likely class is the prediction and its score the ``score``; None for another object.

    The classes themselves are not columns: a top-k answer names different classes each time.
    """
    values = obj.values()
    if not values or not all(v.__class__ is float or v.__class__ is int for v in values):
        return None
    if not any(v.__class__ is float for v in values) or not all(0 <= v <= 1 for v in values):
        return None
    best = max(obj, key=obj.__getitem__)  # the first of equal scores, in the server's order
    return [_scalars(cx, prediction=best, score=obj[best])]


def _openai_request(obj: dict[str, Any], chat: bool, cx: _Ctx) -> _Row:
    messages, count, chars = obj.get("messages"), None, None
    if chat and messages.__class__ is list:
        count = len(messages)
        chars = sum(_chars(m.get("content")) for m in messages if m.__class__ is dict)
    elif not chat and "prompt" in obj:
        chars = _chars(obj["prompt"])
    max_tokens = obj.get("max_tokens")
    if max_tokens is None:
        max_tokens = obj.get("max_completion_tokens")
    return _scalars(
        cx, model=obj.get("model"), message_count=count, prompt_chars=chars,
        max_tokens=max_tokens, temperature=obj.get("temperature"),
    )  # fmt: skip


def _completion(chunks: list[Any], stream: bool, cx: _Ctx) -> list[_Row] | None:
    """One row summing an OpenAI-style answer: a whole response or a stream's chunks."""
    chars, finish, usage, seen = 0, None, {}, False
    for obj in chunks:
        if obj.__class__ is not dict:
            continue
        if obj.get("usage").__class__ is dict:
            usage, seen = obj["usage"], True
        choices = obj.get("choices")
        for c in choices if choices.__class__ is list else ():
            seen = True
            if c.__class__ is not dict:
                continue
            msg = c.get("delta" if stream else "message")
            chars += _chars(msg.get("content") if msg.__class__ is dict else c.get("text"))
            # A stream's last finish_reason wins; a whole answer reports choices[0]'s.
            if c.get("finish_reason") is not None and (stream or finish is None):
                finish = c["finish_reason"]
    row = _scalars(
        cx, prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        finish_reason=finish, completion_chars=chars,
    )  # fmt: skip
    return [row] if seen else None


def _sse(body: bytes, cx: _Ctx) -> Parsed:
    chunks: list[Any] = []
    events, bad, data = 0, 0, []
    text = bytes(body).decode("utf-8", "replace")
    # Only CR and LF end SSE lines; str.splitlines would also split at U+2028 in JSON strings.
    for line in [*text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), ""]:
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif not line and data:  # a blank line ends an event
            payload, data = "\n".join(data), []
            events += 1
            try:
                chunks.append(orjson.loads(payload) if payload.strip() != "[DONE]" else None)
            except orjson.JSONDecodeError:
                bad += 1
    rows = _completion(chunks, True, cx)
    if rows is not None:
        return Parsed("ok", rows, cx.capped, cx.redacted)
    if not events:
        return Parsed("not_json", [], detail="event stream without data lines")
    status = "parse_error" if bad else "unknown_shape"
    return Parsed(status, [], detail=f"{bad} of {events} stream events undecodable, no choices")


@functools.lru_cache(maxsize=1024)  # a handful of routes; bounded, as paths come from clients
def _openai_kind(path: str) -> bool | None:
    """True for chat completions, False for completions, None for any other path."""
    path = "/" + path.partition("?")[0].rstrip("/")
    return next((chat for suffix, chat in _OPENAI if path.endswith(suffix)), None)


def is_openai(path: str) -> bool:
    """Whether ``path`` is an OpenAI-style completions route (whose body names the model)."""
    return _openai_kind(path) is not None


@functools.lru_cache(maxsize=1024)
def _one_instance(path: str) -> bool:
    """TorchServe's ``/predictions/{model}``: a request is one instance, its answer one row."""
    return path.startswith("/predictions/")


def _parse_int(s: str) -> int | float:
    # As orjson does: integers beyond 64 bits become floats (huge ones inf, not an error).
    v = int(s) if len(s) < 30 else _U64_MAX + 1
    return v if _I64_MIN <= v <= _U64_MAX else float(s)


def _scrub(rows: list[_Row]) -> list[_Row]:
    """Replace lone surrogates, which the fallback decoder lets through from ``\\ud800``."""

    def fix(s: str) -> str:
        return s.encode("utf-8", "replace").decode("utf-8")

    for i, row in enumerate(rows):
        try:
            orjson.dumps(row)  # fails only on a lone surrogate in a name or value
        except orjson.JSONEncodeError:
            rows[i] = {fix(k): fix(v) if v.__class__ is str else v for k, v in row.items()}
    return rows


def _gunzip(body: bytes, limit: int) -> bytes:
    """The gzip member's contents, refused beyond ``limit`` bytes (a small body can unzip huge)."""
    opener = zlib.decompressobj(wbits=31)
    out = opener.decompress(bytes(body), limit)
    if opener.unconsumed_tail:
        raise ValueError(f"over {limit} bytes unzipped")
    return out


def _parse(
    body: bytes,
    content_type: str | None,
    truncated: bool,
    shape: Callable[[Any], list[_Row] | None],
    cx: _Ctx,
    sse: bool = False,
    loaded: Any = None,
) -> Parsed:
    if loaded is not None:  # a fast lane below loaded it, and it starts with "{": no prelude
        return _shaped(loaded, shape, cx, fallback=False)
    if truncated:
        return Parsed("too_large", [], detail="body is over max_body_bytes")
    if not body or body.isspace():
        return Parsed("empty", [], detail="body is empty")
    if body[:2] == _GZIP:
        # MLServer and others gzip larger answers for clients that accept it; the capture
        # holds the bytes as sent, so they are opened here, off the request path
        try:
            body = _gunzip(body, cx.max_unzipped)
        except (zlib.error, ValueError) as exc:
            return Parsed("parse_error", [], detail=f"gzip body: {exc}")
    if body[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte order mark, as some Windows clients send
        body = body[3:]
    start = body.lstrip()[:5]
    if sse and (
        start == b"data:"
        or ("text/event-stream" in (content_type or "").lower() and start[:1] not in (b"{", b"["))
    ):
        return _sse(body, cx)
    fallback = False
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:  # the stdlib accepts NaN and Infinity, which some model servers send
            obj = json.loads(bytes(body).decode("utf-8"), parse_int=_parse_int)
            fallback = True
        except Exception:  # also RecursionError from deep nesting
            obj = split_binary(bytes(body))  # a JSON header and raw tensor bytes (Triton)
            if obj is None:
                status = "parse_error" if start[:1] in (b"{", b"[") else "not_json"
                return Parsed(status, [], detail=str(exc))
    return _shaped(obj, shape, cx, fallback)


def _shaped(
    obj: Any, shape: Callable[[Any], list[_Row] | None], cx: _Ctx, fallback: bool
) -> Parsed:
    rows = shape(obj)
    if rows is None:
        return Parsed("unknown_shape", [], detail=f"no known shape for a JSON {type(obj).__name__}")
    rows = _scrub(rows) if fallback else rows
    return Parsed("ok", rows, cx.capped, cx.redacted, names=cx.naming if rows else None)


def _guard(parse: Callable[[], Parsed]) -> Parsed:
    try:
        parsed = parse()
    except Exception as exc:  # never raise on the writer thread: a bug becomes a status
        parsed = Parsed("parse_error", [], detail=f"{type(exc).__name__}: {exc}")
    if parsed.detail is not None:
        parsed.detail = parsed.detail[:_MAX_DETAIL]
    return parsed


def parse_request(
    body: bytes,
    *,
    path: str = "/",
    content_type: str | None = None,
    truncated: bool = False,
    columns: Sequence[str] | None = None,
    tensor_columns: Mapping[str, Sequence[str]] | None = None,
    limits: ParseLimits = ParseLimits(),
) -> Parsed:
    """Turn a request body into one row per instance of its batch. Never raises.

    ``columns`` names the positions of list-shaped instances and ``tensor_columns`` the columns
    of Open Inference Protocol input tensors; ``path`` picks OpenAI-style rows.
    """
    loaded = _loaded(body, path, truncated)
    if loaded is not None and (rows := _flat_instances(loaded, limits)) is not None:
        return Parsed("ok", rows, names="by_name")
    cx = _Ctx(limits, columns)

    def shape(obj: Any) -> list[_Row] | None:
        chat = _openai_kind(path)
        if chat is not None:
            row = _openai_request(obj, chat, cx) if obj.__class__ is dict else None
            return [row] if row else None
        if obj.__class__ is list:
            return _instances(obj, cx, scalars=False)
        if obj.__class__ is not dict:
            return None
        if obj.get("dataframe_split").__class__ is dict:
            return _split(obj["dataframe_split"], cx)
        for key in ("instances", "dataframe_records", "inputs"):
            if obj.get(key).__class__ is list:
                if key == "inputs" and _is_tensors(obj[key]):
                    return _tensors(obj[key], tensor_columns, cx, inputs=True)
                return _instances(obj[key], cx, scalars=True)
        if obj.get("inputs").__class__ is dict:  # MLflow's column-oriented tensor inputs
            return _columnar(obj["inputs"], "", cx)
        cx.named("by_name")
        return [_record(obj, cx)]

    return _guard(lambda: _parse(body, content_type, truncated, shape, cx, loaded=loaded))


def parse_response(
    body: bytes,
    *,
    path: str = "/",
    content_type: str | None = None,
    truncated: bool = False,
    tensor_columns: Mapping[str, Sequence[str]] | None = None,
    limits: ParseLimits = ParseLimits(),
) -> Parsed:
    """Turn a response body into one row per prediction. Never raises.

    An OpenAI-style Server-Sent Events stream is summed into one row. ``tensor_columns`` names
    the columns of Open Inference Protocol output tensors.
    """
    loaded = _loaded(body, path, truncated)
    if loaded is not None and (rows := _scalar_predictions(loaded, limits)) is not None:
        return Parsed("ok", rows)
    cx = _Ctx(limits)

    def shape(obj: Any) -> list[_Row] | None:
        if _openai_kind(path) is not None:
            return _completion([obj], False, cx)
        if obj.__class__ is list and _one_instance(path):
            return _predictions([obj], cx)  # TorchServe answers each request's one instance
        if obj.__class__ is list or (obj is not None and obj.__class__ is not dict):
            return _predictions(obj, cx)  # a bare list or value, as TorchServe and MLflow send
        if obj.__class__ is not dict:
            return None
        if "predictions" in obj:
            return _predictions(obj["predictions"], cx)
        if _is_tensors(obj.get("outputs")):
            return _tensors(obj["outputs"], tensor_columns, cx)
        if _one_instance(path) and (scored := _class_scores(obj, cx)) is not None:
            return scored
        return [_record(obj, cx)]

    return _guard(lambda: _parse(body, content_type, truncated, shape, cx, True, loaded))


# The fast lanes: the commonest bodies, rows exactly as the general path gives them, with a
# tenth of its calls; anything they do not recognise goes the general way with what they loaded.


def _loaded(body: bytes, path: str, truncated: bool) -> Any:
    """The JSON object ``body`` holds where it starts with ``{`` (so that no prelude of
    ``_parse`` applies) and the path is not OpenAI-style; else None."""
    if truncated or body[:1] != b"{" or _openai_kind(path) is not None:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _flat_instances(obj: Any, limits: ParseLimits) -> list[_Row] | None:
    """The records of ``{"instances": [...]}`` when each one is stored as it is."""
    if obj.__class__ is not dict or limits.redact or obj.get("dataframe_split").__class__ is dict:
        return None
    items = obj.get("instances")
    if items.__class__ is not list or not items or len(items) > limits.max_rows:
        return None
    most, longest = limits.max_fields_per_row, limits.max_name_length
    for item in items:
        if (
            item.__class__ is not dict
            or len(item) > most
            or not _clean(item.values())
            or max(map(len, item), default=0) > longest
        ):
            return None
    return items


def _scalar_predictions(obj: Any, limits: ParseLimits) -> list[_Row] | None:
    """One row per value of ``{"predictions": [scalars]}``."""
    p = obj.get("predictions") if obj.__class__ is dict else None
    if (
        p.__class__ is not list
        or not p
        or len(p) > limits.max_rows
        or "prediction" in limits.redact
        or limits.max_name_length < len("prediction")
        or not _clean(p)
    ):
        return None
    return [{"prediction": v} for v in p]
