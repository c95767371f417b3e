"""Models named in request paths: the name, per-model columns in the store, scoped cursors,
baselines per model, and the way an output is taken as the prediction."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from inferwatch import MonitorError
from inferwatch.middleware.baseline.model_scope import baseline_files, scoped_cursors
from inferwatch.middleware.evaluation.prediction_fields import choose_fields
from inferwatch.middleware.payload.exchange import CaptureCounters
from inferwatch.middleware.payload.models import MAX_MODELS, ModelMetadata, model_of
from inferwatch.middleware.payload.parse import ParseLimits, parse_request, parse_response
from inferwatch.middleware.store.column_ids import ColumnIds
from inferwatch.middleware.store.columns import ColumnHints, Columnizer
from inferwatch.middleware.store.database import Store
from tests.conftest import free_port, make_capture, wait_until


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v2/models/weather/infer", "weather"),
        ("/v2/models/weather/versions/3/infer", "weather"),
        ("/v2/models/llama/generate_stream", "llama"),
        ("/v1/models/churn:predict", "churn"),
        ("/v1/models/churn:predict?x=1", "churn"),
        ("/predictions/mnist", "mnist"),
        ("/predictions/mnist/2.0", "mnist"),
        ("/v2/models/weather", None),  # metadata, not inference
        ("/invocations", None),
        ("/v1/chat/completions", None),
        ("/predict", None),
    ],
)
def test_model_of(path: str, model: str | None) -> None:
    assert model_of(path) == model


def test_baseline_files_from_a_folder_and_from_pairs(tmp_path: Path) -> None:
    for name in ("a.json", "b.json", "notes.txt"):
        (tmp_path / name).write_text("{}")
    assert baseline_files(str(tmp_path)) == {
        "a": str(tmp_path / "a.json"),
        "b": str(tmp_path / "b.json"),
    }
    assert baseline_files("m1=/x/1.json, m2=/x/2.json") == {"m1": "/x/1.json", "m2": "/x/2.json"}
    assert baseline_files(None) == {}
    with pytest.raises(MonitorError, match="model=path"):
        baseline_files("just-a-missing-file.json")


def test_column_ids_keep_each_models_names_apart() -> None:
    ids = ColumnIds()
    names = ["x", "x", "y"]
    types, roles = np.zeros(3, dtype=np.int8), np.zeros(3, dtype=np.intp)
    first = ids.ids(names, types, roles, np.array(["a", "b", "a"], dtype=object))
    assert first[0] != first[1] and len(set(first.tolist())) == 3
    again = ids.ids(["x"], types[:1], roles[:1], np.array(["b"], dtype=object))
    assert again[0] == first[1]
    rows = ids.unstored(first)
    assert sorted(zip(rows["model"], rows["name"], strict=True)) == [
        ("a", "x"),
        ("a", "y"),
        ("b", "x"),
    ]


def _store_two_models(path: str) -> Store:
    columnizer = Columnizer(limits=ParseLimits(), max_names=100, counters=CaptureCounters())
    captures = []
    for i, model in enumerate(["alpha", "beta", "alpha"]):
        body = json.dumps({"inputs": [{"name": "x", "shape": [1], "data": [i]}]}).encode()
        response = json.dumps({"outputs": [{"name": "y", "shape": [1], "data": [i]}]}).encode()
        capture = make_capture(f"r{i}", body, response)
        captures.append(capture._replace(path=f"/v2/models/{model}/infer"))
    store = Store(path)
    batch = columnizer.columns(captures)
    store.insert(batch.requests, batch.features, batch.new_columns)
    return store


def test_scoped_cursors_see_one_models_rows(tmp_path: Path) -> None:
    store = _store_two_models(str(tmp_path / "s.duckdb"))
    try:
        for model, expected in (("alpha", 4), ("beta", 2), (None, 6)):
            cursor = scoped_cursors(store.cursor, model)()
            try:
                assert cursor.execute("SELECT count(*) FROM features").fetchone()[0] == expected
                requests = cursor.execute("SELECT count(*) FROM requests").fetchone()[0]
                assert requests == expected // 2
            finally:
                cursor.close()
        odd = scoped_cursors(store.cursor, "it's")()
        assert odd.execute("SELECT count(*) FROM features").fetchone()[0] == 0
        odd.close()
    finally:
        store.close()


def test_a_store_made_before_the_model_columns_gets_them(tmp_path: Path) -> None:
    path = str(tmp_path / "old.duckdb")
    store = _store_two_models(path)
    store.close()
    con = duckdb.connect(path)
    con.execute("DROP VIEW features")
    con.execute("ALTER TABLE requests DROP COLUMN model")
    con.execute("ALTER TABLE feature_columns DROP COLUMN model")
    con.close()
    reopened = Store(path)
    try:
        models = reopened.query("SELECT DISTINCT model FROM features")
        assert models == [(None,)]
        assert reopened.query("SELECT count(*) FROM requests WHERE model IS NULL") == [(3,)]
    finally:
        reopened.close()


def test_request_naming_is_told() -> None:
    limits = ParseLimits()
    tensor = {"inputs": [{"name": "input-0", "shape": [1, 3], "data": [1, 2, 3]}]}
    cases = [
        (tensor, ("a", "b", "c"), "positional", {"a": 1, "b": 2, "c": 3}),
        (tensor, ("a", "b"), "as_sent", {"input-0[0]": 1, "input-0[1]": 2, "input-0[2]": 3}),
        ({"instances": [[1, 2]]}, ("a", "b"), "positional", {"a": 1, "b": 2}),
        ({"instances": [[1, 2]]}, (), "as_sent", {"f0": 1, "f1": 2}),
        ({"a": 1}, (), "by_name", {"a": 1}),
    ]
    for body, columns, naming, row in cases:
        parsed = parse_request(json.dumps(body).encode(), columns=columns, limits=limits)
        assert (parsed.names, parsed.rows) == (naming, [row]), body


def test_gzip_bodies_are_opened_within_a_bound() -> None:
    body = gzip.compress(json.dumps({"outputs": [{"name": "y", "shape": [2, 1],
                                                  "data": [1, 2]}]}).encode())  # fmt: skip
    assert parse_response(body).rows == [{"y": 1}, {"y": 2}]
    bomb = gzip.compress(b"[" + b"0," * 100_000 + b"0]")
    parsed = parse_response(bomb, limits=ParseLimits(max_unzipped=10_000))
    assert parsed.status == "parse_error" and "unzipped" in parsed.detail


def _stats(strings: int = 0, low: float = 0.0, high: float = 1.0, integral: bool = False) -> dict:
    numbers = 0 if strings else 10
    return {"buckets": np.zeros(1), "strings": strings, "numbers": numbers, "low": low,
            "high": high, "integral": integral}  # fmt: skip


def test_the_prediction_is_taken_in_the_documented_order() -> None:
    labels, proba = _stats(strings=10), _stats(low=0.1, high=0.9)
    both = {"predict": labels, "predict_proba[0]": proba, "predict_proba[1]": proba}
    choice = choose_fields(both, None, None, "predict", "string")
    assert (choice.prediction, choice.reason) == (
        "predict",
        "the baseline's prediction column 'predict'",
    )
    assert choice.vector == ["predict_proba[0]", "predict_proba[1]"]
    choice = choose_fields({"Predict": labels}, None, None, "predict", "string")
    assert choice.prediction == "Predict" and "matches" in choice.reason
    choice = choose_fields({"prediction": labels}, None, None, "weather_guess", "string")
    assert (choice.prediction, choice.reason) == ("prediction", "the only output")
    choice = choose_fields(both, None, None, "guess", "string")
    assert choice.prediction == "predict" and "class labels" in choice.reason
    vector = {"p[0]": proba, "p[1]": proba}
    choice = choose_fields(vector, None, None, "guess", "string")
    assert (choice.prediction, choice.argmax) == ("p", True)
    choice = choose_fields(both, "predict_proba[*]", None, "predict", "string")
    assert (choice.prediction, choice.argmax, choice.reason) == (
        "predict_proba", True, "set by prediction_output; its most likely class is the prediction"
    )  # fmt: skip


def test_metadata_datatypes_tell_labels_from_scores() -> None:
    codes, scores = _stats(low=0, high=3, integral=True), _stats(low=0, high=1, integral=True)
    fields = {"OUTPUT0": codes, "OUTPUT1": scores}
    assert choose_fields(fields, None, None).prediction is None  # both look like labels
    declared = {"OUTPUT0": "INT64", "OUTPUT1": "FP32"}
    choice = choose_fields(fields, None, None, None, None, declared)
    assert choice.prediction == "OUTPUT0" and "class labels" in choice.reason


def test_columnizer_uses_each_models_column_order() -> None:
    columnizer = Columnizer(
        limits=ParseLimits(),
        max_names=100,
        counters=CaptureCounters(),
        hints=lambda: ColumnHints(columns=("g0", "g1"), model_columns={"m": ("a", "b")}),
    )
    body = json.dumps({"inputs": [{"name": "t", "shape": [1, 2], "data": [1, 2]}]}).encode()
    captures = [
        make_capture("r1", body, ts=time.time())._replace(path="/v2/models/m/infer"),
        make_capture("r2", body, ts=time.time())._replace(path="/v2/models/other/infer"),
    ]
    batch = columnizer.columns(captures)
    names = set(batch.new_columns["name"].tolist())
    assert {"a", "b", "g0", "g1"} <= names
    assert batch.requests["model"].tolist() == ["m", "other"]


def test_metadata_of_an_unreachable_upstream_is_none_and_never_raises() -> None:
    metadata = ModelMetadata(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    metadata.note_path("/v2/models/m/infer")
    metadata.note_path("/v2/models/m/infer")  # one read at a time per model
    assert metadata.models() == ["m"]
    wait_until(lambda: "inferwatch-metadata" not in {t.name for t in threading.enumerate()})
    assert metadata.get("m") is None
    off = ModelMetadata(None)
    off.note_path("/v2/models/m/infer")
    assert off.models() == [] and off.get("m") is None


def _chat(request_id: str, model: object, path: str = "/v1/chat/completions") -> tuple:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    answer = json.dumps({"choices": [{"message": {"content": "yo"}, "finish_reason": "stop"}]})
    capture = make_capture(request_id, body.encode(), answer.encode())
    return capture._replace(path=path)


def test_openai_traffic_is_the_model_its_body_names_within_a_bound() -> None:
    counters = CaptureCounters()
    columnizer = Columnizer(limits=ParseLimits(), max_names=100, counters=counters)
    batch = columnizer.columns(
        [
            _chat("r1", "llama-3-8b"),
            _chat("r2", "qwen", "/openai/v1/completions"),
            _chat("r3", 7),  # not a name
            _chat("r4", "ignored", "/v2/models/named/generate"),  # the path names it
        ]
    )
    assert batch.requests["model"].tolist() == ["llama-3-8b", "qwen", None, "named"]
    assert counters.models_capped == 0
    many = [_chat(f"m{i}", f"model-{i}") for i in range(MAX_MODELS + 10)]
    models = columnizer.columns(many).requests["model"].tolist()
    # three names were known already: the rest fill the bound, and the overflow has no model
    kept = MAX_MODELS - 3
    assert models[:kept] == [f"model-{i}" for i in range(kept)]
    assert models[kept:] == [None] * (len(many) - kept)
    assert counters.models_capped == len(many) - kept
    again = columnizer.columns([_chat("again", "llama-3-8b")]).requests["model"].tolist()
    assert again == ["llama-3-8b"]  # a known name is still its model
