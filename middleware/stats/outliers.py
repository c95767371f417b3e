"""A multivariate model of the training data: how unusual a row is, all features together.

Each row is standardized (numbers by the baseline's mean and spread, frequent categories one-hot
and standardized as well, missing and unseen values at the baseline's mean), projected on the
principal components of the training rows and whitened: its score is its Mahalanobis distance
from the training rows' centre. A row whose features keep their ranges but break the training
data's correlations lies along a component of small variance, and scores high. NannyML's
reconstruction error (the distance to the plane of the components that explain 65% of the
variance) was measured first and not kept: on two features correlated at 0.8 and a category,
a row with both values in range but the correlation reversed scored below the most unusual of
2,000 ordinary rows. docs/drift.md explains the thresholds.

The model is fitted on one sample of the training file and its score distribution measured on a
second, disjoint one: the fitting sample's own scores are biased low.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["TOP_CATEGORIES", "OutlierModel", "fit_outlier_model", "number_key"]

_DEGENERATE = 1e-9
# Added to each component's variance: a near-constant combination of features (two columns
# that are copies) must not turn rounding noise at serving time into outliers.
_FLOOR = 1e-3
_THRESHOLD_QUANTILE = 0.995  # a row above the baseline's 99.5th percentile is an outlier
_CLIP_QUANTILE = 0.999  # window means use scores clipped here, so one wild row cannot move them
TOP_CATEGORIES = 10
_MIN_CATEGORY_SHARE = 0.01
_MIN_STD = 1e-9


def number_key(value: float) -> str:
    """The category key of a number, as the baseline's SQL writes it: ``3`` for 3.0."""
    if value == math.trunc(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True, slots=True)
class OutlierModel:
    """The fitted model of a baseline's ``outliers`` entry (see :func:`fit_outlier_model`)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]  # the one-hot categories of each categorical feature
    center: np.ndarray  # per encoded column
    scale: np.ndarray
    components: np.ndarray  # (components, encoded columns)
    variances: np.ndarray  # of the rows along each component, floored
    threshold: float
    expected_share: float
    clip: float
    score_mean: float
    score_std: float
    rows: int  # the held-out rows that measured the score distribution
    weights: np.ndarray = field(init=False, repr=False, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def owners(self) -> np.ndarray:
        """The feature (index into :attr:`names`) of each encoded column."""
        owners = list(range(len(self.numeric)))
        for j, values in enumerate(self.values):
            owners += [len(self.numeric) + j] * len(values)
        return np.asarray(owners, dtype=np.intp)

    def __post_init__(self) -> None:
        # standardizing, projecting and whitening in one matrix: one product per row scored
        weights = self.components / self.scale / np.sqrt(self.variances)[:, None]
        object.__setattr__(self, "weights", weights)

    def centred(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Rows less the baseline's centre, from numbers (NaN when missing) and category codes
        (-1 when missing or not among the one-hot values); missing values at the centre."""
        p = len(self.numeric)
        n = len(numbers) if p else len(codes)
        rows = np.empty((n, len(self.center)))
        if p:
            block = numbers - self.center[:p]
            block[~np.isfinite(block)] = 0.0
            rows[:, :p] = block
        rows[:, p:] = -self.center[p:]
        offset = p
        for j, values in enumerate(self.values):
            hit = np.flatnonzero(codes[:, j] >= 0)
            rows[hit, offset + codes[hit, j]] += 1.0
            offset += len(values)
        return rows

    def encode(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Standardized rows (see :meth:`centred`)."""
        return self.centred(numbers, codes) / self.scale

    def residuals(self, encoded: np.ndarray) -> np.ndarray:
        """Each standardized row decorrelated and whitened (its squared length is the squared
        Mahalanobis distance), in the encoded columns so that each part has its feature."""
        return (_project(encoded, self.components) / np.sqrt(self.variances)) @ self.components

    def score(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Each row's Mahalanobis distance from the baseline's centre."""
        # the components are orthonormal: the whitened coordinates have the residuals' length
        whitened = _project(self.centred(numbers, codes), self.weights)
        return np.sqrt(np.einsum("ij,ij->i", whitened, whitened))

    def contributions(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Each row's squared error per feature (rows x :attr:`names`); they sum to score²."""
        residual = self.residuals(self.encode(numbers, codes))
        out = np.zeros((len(residual), len(self.names)))
        np.add.at(out.T, self.owners(), (residual**2).T)
        return out

    def codes(self, keys: Sequence[Sequence[str | None]]) -> np.ndarray:
        """Category codes of rows of keys (one key per categorical feature, None when missing)."""
        lookup = [{v: i for i, v in enumerate(values)} for values in self.values]
        return np.asarray(
            [[lookup[j].get(k, -1) for j, k in enumerate(row)] for row in keys], dtype=np.intp
        ).reshape(len(keys), len(self.values))

    def to_json(self) -> dict[str, Any]:
        """The baseline's ``outliers`` entry (docs/drift.md, "Outliers")."""
        return {
            "method": "pca_mahalanobis",
            "numeric": list(self.numeric),
            "categorical": {n: list(v) for n, v in zip(self.categorical, self.values, strict=True)},
            "center": _floats(self.center),
            "scale": _floats(self.scale),
            "components": [_floats(row) for row in self.components],
            "variances": _floats(self.variances),
            "threshold": self.threshold,
            "expected_share": self.expected_share,
            "clip": self.clip,
            "score_mean": self.score_mean,
            "score_std": self.score_std,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, doc: Any) -> OutlierModel:
        """Validate a baseline's ``outliers`` entry; raises ValueError naming what is wrong."""
        if not isinstance(doc, Mapping) or doc.get("method") != "pca_mahalanobis":
            raise ValueError("outliers is not a pca_reconstruction model")
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise ValueError(f"outliers has an unknown key {unknown[0]!r}")
        numeric = doc.get("numeric")
        categorical = doc.get("categorical")
        if not isinstance(numeric, list) or not all(isinstance(n, str) for n in numeric):
            raise ValueError("outliers.numeric is not a list of names")
        if not isinstance(categorical, Mapping) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in categorical.values()
        ):
            raise ValueError("outliers.categorical is not an object of value lists")
        width = len(numeric) + sum(len(v) for v in categorical.values())
        center = _array(doc.get("center"), "center", (width,))
        scale = _array(doc.get("scale"), "scale", (width,))
        if np.any(scale <= 0):
            raise ValueError("outliers.scale holds a value that is not positive")
        listed = doc.get("components")
        if not isinstance(listed, list):
            raise ValueError("outliers.components is not a list of rows")
        components = _array(listed, "components", (len(listed), width))
        variances = _array(doc.get("variances"), "variances", (len(components),))
        if np.any(variances <= 0):
            raise ValueError("outliers.variances holds a value that is not positive")
        stats = {}
        for key in ("threshold", "expected_share", "clip", "score_mean", "score_std"):
            value = doc.get(key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"outliers.{key} is not a non-negative number")
            stats[key] = float(value)
        rows = doc.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ValueError("outliers.rows is not a count")
        return cls(
            numeric=tuple(numeric),
            categorical=tuple(categorical),
            values=tuple(tuple(v) for v in categorical.values()),
            center=center,
            scale=scale,
            components=components,
            variances=variances,
            rows=rows,
            **stats,
        )


# OpenBLAS runs a product of m x k by k x n on one thread below m * n * k = 262,144: the writer
# scores in blocks that small, so that scoring never takes more cores than the writer's own (on
# a loaded machine BLAS's threads also made it three times slower).
_ONE_THREAD = 200_000


def _project(encoded: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``encoded @ components.T``, in blocks of rows small enough for one BLAS thread."""
    step = max(1, _ONE_THREAD // max(components.size, 1))
    if len(encoded) <= step:
        return encoded @ components.T
    return np.concatenate(
        [encoded[i : i + step] @ components.T for i in range(0, len(encoded), step)]
    )


_KEYS = frozenset(
    {"method", "numeric", "categorical", "center", "scale", "components", "variances"}
    | {"threshold"}
    | {"expected_share", "clip", "score_mean", "score_std", "rows"}
)


def _floats(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def _array(value: Any, key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"outliers.{key} is not a list of numbers") from exc
    if array.shape != shape or not np.all(np.isfinite(array)):
        raise ValueError(f"outliers.{key} does not fit the model's columns")
    return array


def fit_outlier_model(
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, Sequence[str | None]],
    values: Mapping[str, Sequence[str]],
    *,
    seed: int = 0,
) -> OutlierModel | None:
    """Fit the model on a sample of the training rows: ``numeric`` maps names to float arrays
    (NaN when missing), ``categorical`` names to keys (None when missing) and ``values`` each
    categorical feature to its categories by descending count. Half the rows fit, the other
    half measure the score distribution. None when there are too few rows or columns."""
    n = len(next(iter(numeric.values()))) if numeric else len(next(iter(categorical.values()), []))
    if n < 20 or not (numeric or categorical):
        return None
    order = np.random.default_rng(seed).permutation(n)
    fit, held = order[: n // 2], order[n // 2 :]
    # one-hot columns of rare values (under 1% of rows) carry noise, not structure
    kept = {}
    for name, column in categorical.items():
        counts = Counter(column[i] for i in fit.tolist())
        frequent = tuple(
            v for v in values.get(name, ())[:TOP_CATEGORIES]
            if counts[v] >= _MIN_CATEGORY_SHARE * len(fit)
        )  # fmt: skip
        if frequent:
            kept[name] = frequent
    names = list(numeric)
    numbers = np.zeros((n, len(names)))
    for i, name in enumerate(names):
        numbers[:, i] = numeric[name]
    cats = tuple(kept)
    width = len(names) + sum(map(len, kept.values()))
    draft = OutlierModel(
        numeric=tuple(names),
        categorical=cats,
        values=tuple(kept[c] for c in cats),
        center=np.zeros(width),
        scale=np.ones(width),
        components=np.zeros((0, width)),
        variances=np.zeros(0),
        threshold=0.0,
        expected_share=0.0,
        clip=0.0,
        score_mean=0.0,
        score_std=0.0,
        rows=n,
    )
    codes = draft.codes(list(zip(*(categorical[c] for c in cats), strict=True)) or [()] * n)
    shares = draft.centred(numbers[fit], codes[fit])[:, len(names) :].mean(axis=0)
    ok = np.isfinite(numbers[fit])
    present = np.maximum(ok.sum(axis=0), 1)
    means = np.where(ok, numbers[fit], 0.0).sum(axis=0) / present
    spread = np.sqrt((np.where(ok, numbers[fit] - means, 0.0) ** 2).sum(axis=0) / present)
    center = np.concatenate([means, shares])
    scale = np.concatenate([spread, np.sqrt(shares * (1 - shares))])
    scale = np.where(scale > _MIN_STD, scale, 1.0)
    # rounded as the file keeps them, so that the scores measured here are the ones served
    center, scale = np.asarray(_floats(center)), np.asarray(_floats(scale))
    base = OutlierModel(**{**_fields(draft), "center": center, "scale": scale})
    encoded = base.encode(numbers[fit], codes[fit])
    _, singular, vt = np.linalg.svd(encoded, full_matrices=False)
    variance = singular**2 / len(fit)
    # directions without variance (the one-hot columns of a feature sum to one) carry none
    k = int(np.sum(variance > _DEGENERATE * variance.sum()))
    if k == 0:  # every column constant: nothing to model
        return None
    components = np.asarray([_floats(row) for row in vt[:k]]).reshape(k, len(center))
    floor = _FLOOR * variance[:k].mean()
    variances = np.asarray(_floats(variance[:k] + floor))
    model = OutlierModel(**{**_fields(base), "components": components, "variances": variances})
    scores = model.score(numbers[held], codes[held])
    threshold = float(np.quantile(scores, _THRESHOLD_QUANTILE))
    clip = float(np.quantile(scores, _CLIP_QUANTILE))
    clipped = np.minimum(scores, clip)
    return OutlierModel(
        **{
            **_fields(model),
            "threshold": threshold,
            "expected_share": float(np.mean(scores > threshold)),
            "clip": clip,
            "score_mean": float(clipped.mean()),
            "score_std": float(clipped.std()),
            "rows": len(held),
        }
    )


def _fields(model: OutlierModel) -> dict[str, Any]:
    return {f.name: getattr(model, f.name) for f in fields(model) if f.init}
