"""The integer ``column_id`` that stands for a value's role, name and type in ``feature_values``.

An id is name index * 8 + type code * 2 + role code (``_schema``): one dictionary lookup per
value finds the name's index, and array arithmetic does the rest. Ids the store has not seen are
handed to the writer as new ``feature_columns`` rows, in the same transaction as the values.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._schema import ROLE_CODES, TYPE_CODES

__all__ = ["ColumnIds"]

_ROLES = {code: role for role, code in ROLE_CODES.items()}
_TYPES = {code: kind for kind, code in TYPE_CODES.items()}


class ColumnIds:
    """Name indexes, and which column ids the open store already has."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._names: list[str | None] = []  # by index; None where a loaded store left a gap
        self._stored = np.zeros(0, dtype=bool)

    def load(self, columns: Iterable[tuple[int, str, str, str]]) -> None:
        """Start over from a store's ``feature_columns`` rows (id, role, name, type)."""
        self._index.clear()
        self._names = []
        stored: list[int] = []
        for column_id, _, name, _ in columns:
            index = column_id >> 3
            self._index[name] = index
            self._names += [None] * (index + 1 - len(self._names))
            self._names[index] = name
            stored.append(column_id)
        self._stored = np.zeros(len(self._names) * 8, dtype=bool)
        self._stored[stored] = True

    @property
    def size(self) -> int:
        """How many name indexes are in use."""
        return len(self._names)

    def index(self, name: str) -> int | None:
        """The index of ``name``, or None when it was never seen."""
        return self._index.get(name)

    def ids(self, names: list[str], types: np.ndarray, roles: np.ndarray) -> np.ndarray:
        """The column id of each value, from its name, type code and role code."""
        try:
            index = np.fromiter(map(self._index.__getitem__, names), np.int32, len(names))
        except KeyError:  # a name seen for the first time: rare after the first batches
            for name in dict.fromkeys(names):
                if name not in self._index:
                    self._index[name] = len(self._names)
                    self._names.append(name)
            index = np.fromiter(map(self._index.__getitem__, names), np.int32, len(names))
        return index * 8 + types.astype(np.int32) * 2 + roles.astype(np.int32)

    def unstored(self, ids: np.ndarray) -> dict[str, np.ndarray] | None:
        """``feature_columns`` rows for the ids among ``ids`` that the store does not have."""
        if len(self._stored) < len(self._names) * 8:
            self._stored = np.concatenate(
                [self._stored, np.zeros(len(self._names) * 8 - len(self._stored), dtype=bool)]
            )
        fresh = np.unique(ids[~self._stored[ids]])
        if not len(fresh):
            return None
        listed = fresh.tolist()
        return {
            "id": fresh.astype(np.int32),
            "role": np.array([_ROLES[i & 1] for i in listed], dtype=object),
            "name": np.array([self._names[i >> 3] for i in listed], dtype=object),
            "type": np.array([_TYPES[(i >> 1) & 3] for i in listed], dtype=object),
        }

    def mark_stored(self, ids: np.ndarray) -> None:
        """Note that the store committed these ids' ``feature_columns`` rows."""
        self._stored[ids] = True
