"""Captured exchanges to the log store's columns: one request row each, one feature row per value.

Runs on the writer thread. The per-value work is done by C loops (``map``, ``chain``, NumPy)
rather than a Python loop over values: at ``sample_rate`` 1.0 this is most of what monitoring
costs a model server, and a Python loop costs about three times as much per value.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from ..payload.exchange import Capture, CaptureCounters
from ..payload.explanations import explained_body
from ..payload.models import MAX_MODELS, model_of
from ..payload.parse import ParseLimits, is_openai, parse_request, parse_response
from .column_ids import ColumnIds
from .schema import ROLE_CODES, TYPE_CODES

__all__ = ["Batch", "ColumnHints", "Columnizer"]

_ROLES = tuple(sorted(ROLE_CODES, key=ROLE_CODES.__getitem__))  # by role code
_YIELD_EVERY = 32  # captures parsed between two pauses (about 1 ms of work)
_YIELD_S = 0.000_05
_MAX_MODEL_NAME = 200  # characters; a longer one is not a model's name
_BOOLEAN, _STRING = TYPE_CODES["boolean"], TYPE_CODES["string"]
# Whatever is not a string, a boolean or null is stored as a number, as the parser only
# gives back JSON's scalars (ints that fit 64 bits, floats, NaN and the infinities included).
_TYPE_CODES: defaultdict[type, int] = defaultdict(
    lambda: TYPE_CODES["number"],
    {bool: _BOOLEAN, str: _STRING, type(None): TYPE_CODES["null"]},
)


@dataclass(frozen=True, slots=True)
class ColumnHints:
    """Feature names for positional payloads, taken from the baseline when it gives them."""

    columns: Sequence[str] | None = None
    tensor_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    model_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)  # per model


Columns = dict[str, np.ndarray]


class Batch(NamedTuple):
    """Columns to insert: ``requests``, ``feature_values`` and new ``feature_columns`` rows."""

    requests: Columns
    features: Columns | None
    new_columns: Columns | None


class Columnizer:
    """Parses captures and lays them out as the ``requests`` and ``features`` tables' columns.

    Keeps the distinct feature names seen per role, so that ``max_features`` holds across
    batches (and, seeded from the store, across restarts).
    """

    def __init__(
        self,
        *,
        limits: ParseLimits,
        max_names: int,
        counters: CaptureCounters,
        hints: Callable[[], ColumnHints] = ColumnHints,
        seen: Callable[[str], None] | None = None,
    ) -> None:
        self._limits = limits
        self._seen = seen  # told each capture's path (to read the model's metadata)
        self._max_names = max_names
        self._counters = counters
        self._hints = hints
        self.names: dict[str, set[str]] = {role: set() for role in _ROLES}
        self.ids = ColumnIds()
        # requests by model and by how their columns were named
        self.naming: Counter[tuple[str | None, str]] = Counter()
        self.models: set[str] = set()  # model names seen, at most MAX_MODELS

    def naming_report(self, model: str | None = None) -> dict[str, Any]:
        """How request columns were named (``_payload.NAMING``), of one model's requests or of
        all: the usual way and the count of each."""
        counts: Counter[str] = Counter()
        for (owner, how), n in self.naming.items():
            if model is None or owner == model:
                counts[how] += n
        method = max(counts, key=counts.__getitem__) if counts else None
        return {"method": method, "requests": dict(counts)}

    def load(self, columns: list[tuple[Any, ...]]) -> None:
        """Take up a store's ``feature_columns`` rows: its names count toward the cap."""
        for _, role, name, *_ in columns:
            self.names.setdefault(role, set()).add(name)
        self.ids.load(columns)

    def columns(self, captures: Sequence[tuple[Any, ...]]) -> Batch:
        """The request rows of ``captures``, their feature rows and any new feature columns.

        Each capture is a tuple in :class:`Capture`'s field order (a Capture or a plain tuple).
        """
        counters, limits, hints = self._counters, self._limits, self._hints()
        statuses: tuple[list[str], list[str]] = ([], [])
        row_counts: tuple[list[int], list[int]] = ([], [])
        rows: list[dict[str, object]] = []  # every stored row, capture by capture, inputs first
        spans: list[tuple[int, int, int]] = []  # (capture, role, rows) for each run of rows
        models: list[str | None] = []  # the model each capture's path names
        for position, capture in enumerate(captures):
            if position % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Blocks for a moment, so that an event loop waiting for the GIL takes it now
                # instead of at the end of the interpreter's 5 ms switch interval.
                time.sleep(_YIELD_S)
            _, _, _, path, _, _, _, _, request, _, cut_request, request_type = capture[:12]
            response, _, cut_response, response_type, _ = capture[12:]
            model = self._model(model_of(path))
            if self._seen is not None:
                self._seen(path)
            columns = hints.model_columns.get(model, hints.columns) if model else hints.columns
            parsed_in = parse_request(
                b"".join(request),
                path=path,
                content_type=request_type,
                truncated=cut_request,
                columns=columns,
                tensor_columns=hints.tensor_columns,
                limits=limits,
            )
            answer = b"".join(response)
            explained = None if cut_response else explained_body(answer, columns)
            parsed_out = parse_response(
                answer if explained is None else explained,
                path=path,
                content_type=response_type if explained is None else "application/json",
                truncated=cut_response,
                tensor_columns=hints.tensor_columns,
                limits=limits,
            )
            if model is None and parsed_in.rows and is_openai(path):
                model = self._model(parsed_in.rows[0].get("model"))  # the path names none
            models.append(model)
            if parsed_in.status == "parse_error":
                counters.parse_errors += 1
            if parsed_in.names is not None:
                self.naming[model, parsed_in.names] += 1
            for role, parsed in enumerate((parsed_in, parsed_out)):
                statuses[role].append(parsed.status)
                row_counts[role].append(len(parsed.rows))
                if parsed.capped:
                    counters.fields_capped += parsed.capped
                if parsed.redacted:
                    counters.fields_redacted += parsed.redacted
                if parsed.rows:
                    rows += self._admitted(parsed.rows, _ROLES[role])
                    spans.append((position, role, len(parsed.rows)))
        requests = _request_columns(captures, statuses, row_counts, models)
        if not any(rows):
            return Batch(requests, None, None)
        features = _feature_columns(requests, rows, spans, self.ids)
        return Batch(requests, features, self.ids.unstored(features["column_id"]))

    def _model(self, name: object) -> str | None:
        """``name`` as a model of the store: names come from clients, so past ``MAX_MODELS``
        distinct ones a request is counted under no model (and in ``models_capped``)."""
        if not isinstance(name, str) or not name or len(name) > _MAX_MODEL_NAME:
            return None
        if name not in self.models:
            if len(self.models) >= MAX_MODELS:
                self._counters.models_capped += 1
                return None
            self.models.add(name)
        return name

    def _admitted(self, rows: list[dict[str, object]], role: str) -> list[dict[str, object]]:
        """``rows`` as they may be stored: with no more distinct names than ``max_features``."""
        known = self.names[role]
        if known.issuperset(chain.from_iterable(rows)):
            return rows
        return [self._admit(row, known) for row in rows]

    def _admit(self, row: dict[str, object], known: set[str]) -> dict[str, object]:
        """The row without the values of names beyond ``max_features`` (each one counted)."""
        kept: dict[str, object] = {}
        for name, value in row.items():
            if name not in known:
                if len(known) >= self._max_names:
                    self._counters.names_capped += 1
                    continue
                known.add(name)
            kept[name] = value
        return kept


def _request_columns(
    captures: Sequence[tuple[Any, ...]],
    statuses: tuple[list[str], list[str]],
    row_counts: tuple[list[int], list[int]],
    models: list[str | None],
) -> Columns:
    # Each field of every capture, in order (empty tuples when there are no captures).
    field = Capture._make(list(zip(*captures, strict=True)) or [()] * len(Capture._fields))
    return {
        "ts": (np.array(field.ts) * 1_000_000).astype(np.int64).astype("datetime64[us]"),
        "request_id": np.array(field.request_id, dtype=object),
        "method": np.array(field.method, dtype=object),
        "route": np.array(field.route, dtype=object),
        "status": np.array(field.status, dtype=np.int16),
        "latency_ms": np.array(field.latency_s, dtype=np.float64) * 1000.0,
        "ttfb_ms": np.array(field.ttfb_s, dtype=np.float64) * 1000.0,
        "request_bytes": np.array(field.request_bytes, dtype=np.int64),
        "response_bytes": np.array(field.response_bytes, dtype=np.int64),
        "error": np.array(field.error, dtype=object),
        "input_status": np.array(statuses[0], dtype=object),
        "output_status": np.array(statuses[1], dtype=object),
        "input_rows": np.array(row_counts[0], dtype=np.int32),
        "output_rows": np.array(row_counts[1], dtype=np.int32),
        "model": np.array(models, dtype=object),
    }


def _feature_columns(
    requests: Columns,
    rows: list[dict[str, object]],
    spans: list[tuple[int, int, int]],
    ids: ColumnIds,
) -> Columns:
    """One column entry per value of ``rows``, in row order and each row's key order."""
    span = np.array(spans, dtype=np.intp).reshape(-1, 3)
    span_rows = span[:, 2]
    # Per row: its capture, its role and its index within its capture's rows of that role.
    row_owner = np.repeat(span[:, 0], span_rows)
    row_role = np.repeat(span[:, 1], span_rows)
    row_index = np.arange(len(rows)) - np.repeat(np.cumsum(span_rows) - span_rows, span_rows)
    counts = np.fromiter(map(len, rows), dtype=np.intp, count=len(rows))
    total = int(counts.sum())
    names = list(chain.from_iterable(rows))
    values = np.fromiter(chain.from_iterable(map(dict.values, rows)), dtype=object, count=total)
    codes = np.fromiter(map(_TYPE_CODES.__getitem__, map(type, values)), dtype=np.int8, count=total)
    # NumPy float arrays carry no NULL: NaN here is NULL in the table unless the type is
    # number (the store's insert turns it back into NaN there).
    num = np.full(total, np.nan)
    numeric = codes <= _BOOLEAN
    num[numeric] = values[numeric].astype(np.float64)
    text = np.full(total, None, dtype=object)
    strings = codes == _STRING
    text[strings] = values[strings]
    owner = np.repeat(row_owner, counts)
    # the model of each value; one name (or None) when the batch is one model's, as it most is
    distinct = set(requests["model"].tolist())
    model = next(iter(distinct), None) if len(distinct) <= 1 else requests["model"][owner]
    return {
        "ts": requests["ts"][owner],
        "request_id": requests["request_id"][owner],
        "row_index": np.repeat(row_index, counts).astype(np.int32),
        "column_id": ids.ids(names, codes, np.repeat(row_role, counts), model),
        "num": num,
        "str": text,
        "row": np.repeat(np.arange(len(rows)), counts),  # not stored: groups values by row
    }
