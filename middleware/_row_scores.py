"""Outlier scores of captured input rows, computed on the writer thread from a batch's columns.

The batch's feature values are laid into a (rows x model features) matrix with array operations:
only categorical values take a dictionary lookup each. Scoring 25 features costs the writer a
few microseconds per row (benchmarks/outliers.py).
"""

from __future__ import annotations

import math
from itertools import repeat

import numpy as np

from ._column_ids import ColumnIds
from ._outliers import OutlierModel, number_key
from ._schema import TYPE_CODES

__all__ = ["RowScorer"]

_NUMBER, _BOOLEAN, _STRING = TYPE_CODES["number"], TYPE_CODES["boolean"], TYPE_CODES["string"]


class RowScorer:
    """Scores the input rows of writer batches against the baseline's outlier model."""

    def __init__(self) -> None:
        self._model: OutlierModel | None = None
        self._slots = np.full(0, -1, dtype=np.intp)  # model feature of each name index
        self._lookups: list[dict[str, int]] = []

    def scores(
        self, model: OutlierModel | None, ids: ColumnIds, features: dict[str, np.ndarray] | None
    ) -> dict[str, np.ndarray] | None:
        """The ``row_scores`` rows of a batch's ``features`` columns, or None with no model."""
        if model is None or features is None:
            return None
        column = features["column_id"]
        keep = np.flatnonzero((column & 1) == 0)  # inputs
        if not len(keep):
            return None
        column = column[keep]
        slots = self._slots_for(model, ids)
        if not len(slots):
            return None
        name = column >> 3
        slot = np.where(name < len(slots), slots[np.minimum(name, len(slots) - 1)], -1)
        kind = (column >> 1) & 3
        rows, first, row_of = np.unique(features["row"][keep], True, True)
        p, q = len(model.numeric), len(model.categorical)
        numbers = np.full((len(rows), p), np.nan)
        hit = (slot >= 0) & (slot < p) & (kind == _NUMBER)
        numbers[row_of[hit], slot[hit]] = features["num"][keep][hit]
        codes = np.full((len(rows), q), -1, dtype=np.intp)
        hit = np.flatnonzero((slot >= p) & (kind != TYPE_CODES["null"]))
        if len(hit):
            codes[row_of[hit], slot[hit] - p] = self._codes(
                slot[hit] - p, kind[hit], features["num"][keep][hit], features["str"][keep][hit]
            )
        score = model.score(numbers, codes)
        at = keep[first]
        return {
            "ts": features["ts"][at],
            "request_id": features["request_id"][at],
            "row_index": features["row_index"][at],
            "score": score,
            "outlier": score > model.threshold,
        }

    def _codes(
        self, feature: np.ndarray, kind: np.ndarray, num: np.ndarray, text: np.ndarray
    ) -> np.ndarray:
        """The one-hot code of each categorical value (-1 when not one of the model's)."""
        keys = text.copy()
        others = np.flatnonzero(kind != _STRING)  # booleans and numbers: their text keys
        if len(others):
            keys[others] = [
                ("true" if n == 1 else "false") if k == _BOOLEAN else
                number_key(n) if math.isfinite(n) else None
                for k, n in zip(kind[others].tolist(), num[others].tolist(), strict=True)
            ]  # fmt: skip
        codes = np.empty(len(feature), dtype=np.intp)
        for f in np.unique(feature).tolist():
            at = np.flatnonzero(feature == f)
            found = map(self._lookups[f].get, keys[at].tolist(), repeat(-1))
            codes[at] = np.fromiter(found, dtype=np.intp, count=len(at))
        return codes

    def _slots_for(self, model: OutlierModel, ids: ColumnIds) -> np.ndarray:
        """Each name index's model feature; rebuilt when the model or the names change."""
        if model is not self._model or len(self._slots) != ids.size:
            slots = np.full(ids.size, -1, dtype=np.intp)
            for position, name in enumerate(model.names):
                # one baseline's model scores the rows of every model the store has seen
                for index in ids.indexes(name):
                    slots[index] = position
            self._model, self._slots = model, slots
            self._lookups = [{v: i for i, v in enumerate(vals)} for vals in model.values]
        return self._slots
