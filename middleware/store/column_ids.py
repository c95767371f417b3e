"""The integer ``column_id`` that stands for a value's role, name and type in ``feature_values``.

An id is name index * 8 + type code * 2 + role code (``store.schema``): one dictionary lookup per
value finds the name's index, and array arithmetic does the rest. Ids the store has not seen are
handed to the writer as new ``feature_columns`` rows, in the same transaction as the values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .schema import ROLE_CODES, TYPE_CODES

__all__ = ["ColumnIds"]

_ROLES = {code: role for role, code in ROLE_CODES.items()}
_TYPES = {code: kind for kind, code in TYPE_CODES.items()}


class ColumnIds:
    """Name indexes, and which column ids the open store already has.

    A name has an index per model (the model a request path named, None where none): one model's
    ``label`` and another's are different columns, so that each model's checks read its own.
    """

    def __init__(self) -> None:
        self._index: dict[str | None, dict[str, int]] = {None: {}}
        self._names: list[tuple[str | None, str] | None] = []  # by index; None: a loaded gap
        self._stored = np.zeros(0, dtype=bool)

    def load(self, columns: Iterable[tuple[Any, ...]]) -> None:
        """Start over from a store's ``feature_columns`` rows (id, role, name, type[, model])."""
        self._index = {None: {}}
        self._names = []
        stored: list[int] = []
        for column_id, _, name, _, *rest in columns:
            model = rest[0] if rest else None
            index = column_id >> 3
            self._index.setdefault(model, {})[name] = index
            self._names += [None] * (index + 1 - len(self._names))
            self._names[index] = (model, name)
            stored.append(column_id)
        self._stored = np.zeros(len(self._names) * 8, dtype=bool)
        self._stored[stored] = True

    @property
    def size(self) -> int:
        """How many name indexes are in use."""
        return len(self._names)

    def owner(self, index: int) -> tuple[str | None, str] | None:
        """The model and name of name index ``index`` (None for a gap in loaded ids)."""
        return self._names[index]

    def indexes(self, name: str) -> list[int]:
        """The index of ``name`` under every model it was seen with."""
        return [known[name] for known in self._index.values() if name in known]

    def ids(
        self,
        names: list[str],
        types: np.ndarray,
        roles: np.ndarray,
        models: np.ndarray | str | None = None,
    ) -> np.ndarray:
        """The column id of each value, from its name, type code, role code and model (one for
        every value, or an array of each value's)."""
        if not isinstance(models, np.ndarray):  # one model's values: one lookup per value
            index = self._indexes(models, names)
        else:
            found = dict.fromkeys(models.tolist())
            index = np.empty(len(names), dtype=np.int32)
            for model in found:
                at = (
                    np.flatnonzero(models == model)
                    if model is not None
                    else np.flatnonzero(np.equal(models, None))
                )
                index[at] = self._indexes(model, [names[i] for i in at])
        return index * 8 + types.astype(np.int32) * 2 + roles.astype(np.int32)

    def _indexes(self, model: str | None, names: list[str]) -> np.ndarray:
        known = self._index.setdefault(model, {})
        try:
            return np.fromiter(map(known.__getitem__, names), np.int32, len(names))
        except KeyError:  # a name seen for the first time: rare after the first batches
            for name in dict.fromkeys(names):
                if name not in known:
                    known[name] = len(self._names)
                    self._names.append((model, name))
            return np.fromiter(map(known.__getitem__, names), np.int32, len(names))

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
        owners = [self._names[i >> 3] or (None, "") for i in listed]
        return {
            "id": fresh.astype(np.int32),
            "role": np.array([_ROLES[i & 1] for i in listed], dtype=object),
            "name": np.array([name for _, name in owners], dtype=object),
            "type": np.array([_TYPES[(i >> 1) & 3] for i in listed], dtype=object),
            "model": np.array([model for model, _ in owners], dtype=object),
        }

    def mark_stored(self, ids: np.ndarray) -> None:
        """Note that the store committed these ids' ``feature_columns`` rows."""
        self._stored[ids] = True
