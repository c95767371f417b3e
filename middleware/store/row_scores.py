"""Outlier scores of captured input rows, computed on the writer thread from a batch's columns.

The batch's feature values are laid into a (rows x model features) matrix with array operations:
only categorical values take a dictionary lookup each. Scoring 25 features costs the writer a
few microseconds per row (benchmarks/outliers.py).

With several models behind one server, each row is scored by its own model's outlier model (from
the ``baselines`` setting), and the rows of a model without one by the ``baseline``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import repeat

import numpy as np

from ..stats.outliers import OutlierModel, number_key
from .column_ids import ColumnIds
from .schema import TYPE_CODES

__all__ = ["RowScorer"]

_NUMBER, _BOOLEAN, _STRING = TYPE_CODES["number"], TYPE_CODES["boolean"], TYPE_CODES["string"]


class RowScorer:
    """Scores the input rows of writer batches against the baselines' outlier models."""

    def __init__(self) -> None:
        self._key: tuple[tuple[str | None, int], ...] = ()
        self._size = -1
        self._models: list[OutlierModel] = []
        self._owner = np.full(0, -1, dtype=np.intp)  # the scoring model of each name index
        self._slots: list[np.ndarray] = []  # per scoring model: each name index's feature
        self._lookups: list[list[dict[str, int]]] = []

    def scores(
        self,
        models: Mapping[str | None, OutlierModel] | OutlierModel | None,
        ids: ColumnIds,
        features: dict[str, np.ndarray] | None,
    ) -> dict[str, np.ndarray] | None:
        """The ``row_scores`` rows of a batch's ``features`` columns, or None with no model.

        ``models`` maps a model name to its outlier model; None stands for the rows of every
        model not named (a single model is taken as that)."""
        if isinstance(models, OutlierModel):
            models = {None: models}
        if not models or features is None:
            return None
        column = features["column_id"]
        keep = np.flatnonzero((column & 1) == 0)  # inputs
        if not len(keep):
            return None
        owner = self._owners(models, ids)
        if not len(owner):
            return None
        name = column[keep] >> 3
        which = np.where(name < len(owner), owner[np.minimum(name, len(owner) - 1)], -1)
        parts = [
            self._score(m, features, keep[which == m])
            for m in range(len(self._models))
            if np.any(which == m)
        ]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}

    def _score(
        self, m: int, features: dict[str, np.ndarray], keep: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The scores of the rows whose input values ``keep`` indexes, by scoring model ``m``."""
        model, slots = self._models[m], self._slots[m]
        column = features["column_id"][keep]
        slot = slots[column >> 3]
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
                self._lookups[m],
                slot[hit] - p,
                kind[hit],
                features["num"][keep][hit],
                features["str"][keep][hit],
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

    @staticmethod
    def _codes(
        lookups: list[dict[str, int]],
        feature: np.ndarray,
        kind: np.ndarray,
        num: np.ndarray,
        text: np.ndarray,
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
            found = map(lookups[f].get, keys[at].tolist(), repeat(-1))
            codes[at] = np.fromiter(found, dtype=np.intp, count=len(at))
        return codes

    def _owners(self, models: Mapping[str | None, OutlierModel], ids: ColumnIds) -> np.ndarray:
        """Each name index's scoring model; rebuilt when the models or the names change."""
        key = tuple((name, id(model)) for name, model in models.items())
        if key != self._key or ids.size != self._size:
            # one outlier model may serve several models
            self._models = list({id(model): model for model in models.values()}.values())
            place = {id(model): m for m, model in enumerate(self._models)}
            positions = [{n: i for i, n in enumerate(model.names)} for model in self._models]
            owner = np.full(ids.size, -1, dtype=np.intp)
            slots = [np.full(ids.size, -1, dtype=np.intp) for _ in self._models]
            for index in range(ids.size):
                named = ids.owner(index)
                if named is None:
                    continue
                model = models.get(named[0], models.get(None))
                if model is None:
                    continue
                m = place[id(model)]
                owner[index] = m
                slots[m][index] = positions[m].get(named[1], -1)
            self._owner, self._slots = owner, slots
            self._lookups = [
                [{v: i for i, v in enumerate(vals)} for vals in model.values]
                for model in self._models
            ]
            self._key, self._size = key, ids.size
        return self._owner
