"""Requests and responses of real model servers, as their documentation shows them, through the
writer's parsing into a real log store: the rows, their names, the model and the prediction."""

from __future__ import annotations

import json
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferwatch.middleware.evaluation.prediction_fields import choose_fields, output_fields
from inferwatch.middleware.payload.exchange import Capture, CaptureCounters
from inferwatch.middleware.payload.parse import ParseLimits, parse_response
from inferwatch.middleware.store.columns import ColumnHints, Columnizer
from inferwatch.middleware.store.database import Store

DATA = Path(__file__).parent / "data" / "servers"


def binary(header: dict[str, Any], values: dict[str, list[Any]], key: str) -> bytes:
    """A binary-extension body: the JSON header, then each tensor's little-endian bytes."""
    tail = b""
    for spec in header[key]:
        data = values[spec["name"]]
        if spec["datatype"] == "BYTES":
            tail += b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in data)
        else:
            kind = {"INT32": "<i4", "FP32": "<f4"}[spec["datatype"]]
            tail += np.asarray(data, dtype=kind).tobytes()
    return json.dumps(header).encode() + tail


def capture(doc: dict[str, Any]) -> Capture:
    """The exchange a fixture records, as the middleware hands it to the writer."""
    if "request_header" in doc:
        doc = dict(doc)
        request = binary(doc["request_header"], doc["request_values"], "inputs")
        response = binary(doc["response_header"], doc["response_values"], "outputs")
        return _capture(doc["path"], request, "application/octet-stream", response, None)
    if "request" in doc:
        request, request_type = json.dumps(doc["request"]).encode(), "application/json"
    else:
        request, request_type = b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"
    if "response_events" in doc:
        events = [f"data: {json.dumps(e)}\n\n" for e in doc["response_events"]]
        response, response_type = (
            "".join([*events, "data: [DONE]\n\n"]).encode(),
            "text/event-stream",
        )
    else:
        response, response_type = json.dumps(doc["response"]).encode(), "application/json"
    return _capture(doc["path"], request, request_type, response, response_type)


def _capture(
    path: str, request: bytes, request_type: str, response: bytes, response_type: str | None
) -> Capture:
    return Capture(
        ts=time.time(), request_id="r1", method="POST", path=path, route=path,
        status=200, latency_s=0.01, ttfb_s=0.005, request_body=(request,),
        request_bytes=len(request), request_truncated=False, request_content_type=request_type,
        response_body=(response,), response_bytes=len(response), response_truncated=False,
        response_content_type=response_type, error=None,
    )  # fmt: skip


def logged(tmp_path: Path, name: str, columns: tuple[str, ...] = ()) -> dict[str, Any]:
    """Store the fixture's exchange; its rows per role, its request row and its prediction."""
    doc = json.loads((DATA / name).read_text())
    columnizer = Columnizer(
        limits=ParseLimits(),
        max_names=1000,
        counters=CaptureCounters(),
        hints=lambda: ColumnHints(columns=columns or None),
    )
    batch = columnizer.columns([capture(doc)])
    store = Store(str(tmp_path / "s.duckdb"))
    try:
        store.insert(batch.requests, batch.features, batch.new_columns)
        found: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
        for role, index, name_, num, text in store.query(
            "SELECT role, row_index, name, num, str FROM features ORDER BY role, row_index"
        ):
            rows = found[role]
            rows += [{} for _ in range(index + 1 - len(rows))]
            rows[index][name_] = text if text is not None else num
        (request,) = store.query("SELECT model, input_status, output_status FROM requests")
        now = datetime.now(UTC).replace(tzinfo=None)
        span = {"start": now - timedelta(hours=1), "end": now + timedelta(hours=1)}
        cursor = store.cursor()
        try:
            fields = output_fields(cursor, span, 1)
        finally:
            cursor.close()
    finally:
        store.close()
    choice = choose_fields(fields, None, None)
    naming = columnizer.naming_report()["requests"]
    return {"rows": found, "request": request, "choice": choice, "naming": naming}


def test_triton_pytorch_tensors_map_to_the_baseline_and_the_prediction_is_the_argmax(
    tmp_path: Path,
) -> None:
    got = logged(tmp_path, "triton_pytorch.json", columns=("sl", "sw", "pl", "pw"))
    assert got["rows"]["input"] == [
        {"sl": 5.1, "sw": 3.5, "pl": 1.4, "pw": 0.2},
        {"sl": 6.7, "sw": 3.0, "pl": 5.2, "pw": 2.3},
    ]
    assert [sorted(r) for r in got["rows"]["output"]] == [["output__0[0]", "output__0[1]",
                                                          "output__0[2]"]] * 2  # fmt: skip
    assert got["request"] == ("iris_torch", "ok", "ok") and dict(got["naming"]) == {"positional": 1}
    choice = got["choice"]
    assert (choice.prediction, choice.argmax, choice.reason.split(";")[0]) == (
        "output__0",
        True,
        "the only output",
    )


def test_triton_python_backend_named_tensors_and_label_output(tmp_path: Path) -> None:
    got = logged(tmp_path, "triton_python_backend.json")
    assert got["rows"]["input"] == [
        {"INPUT0": 12.0, "INPUT1": "basic"},
        {"INPUT0": 3.5, "INPUT1": "pro"},
        {"INPUT0": 40.0, "INPUT1": "basic"},
    ]
    assert [r["OUTPUT0"] for r in got["rows"]["output"]] == ["stay", "leave", "stay"]
    assert got["rows"]["output"][1]["OUTPUT1[1]"] == pytest.approx(0.65)
    assert got["request"][0] == "churn" and dict(got["naming"]) == {"by_name": 1}
    assert got["choice"].prediction == "OUTPUT0" and "class labels" in got["choice"].reason
    assert got["choice"].vector == ["OUTPUT1[0]", "OUTPUT1[1]"]  # its probabilities


def test_torchserve_bare_answer_is_the_prediction(tmp_path: Path) -> None:
    got = logged(tmp_path, "torchserve_mnist.json")
    assert got["rows"] == {"input": [], "output": [{"prediction": 0.0}]}
    assert got["request"] == ("mnist", "not_json", "ok")
    assert got["choice"].prediction == "prediction"


def test_torchserve_list_answer_is_one_instance(tmp_path: Path) -> None:
    got = logged(tmp_path, "torchserve_list.json")
    assert got["rows"]["input"] == [{"text": "The service was quick and the food was great"}]
    assert got["rows"]["output"] == [{"prediction[0]": 0.08, "prediction[1]": 0.92}]
    assert got["request"] == ("sentiment", "ok", "ok")
    assert (got["choice"].prediction, got["choice"].argmax) == ("prediction", True)


def test_torchserve_kserve_v1(tmp_path: Path) -> None:
    got = logged(tmp_path, "torchserve_kserve_v1.json")
    assert list(got["rows"]["input"][0]) == ["data"]
    assert got["rows"]["output"] == [{"prediction": 2.0}]
    assert got["request"][0] == "mnist" and got["choice"].prediction == "prediction"


def test_torchserve_top_classes_give_the_most_likely_class_as_the_prediction(
    tmp_path: Path,
) -> None:
    got = logged(tmp_path, "torchserve_densenet.json")
    assert got["rows"]["output"] == [{"prediction": "tabby", "score": 0.4664836823940277}]
    assert got["request"] == ("densenet161", "not_json", "ok")
    choice = got["choice"]
    assert (choice.prediction, choice.scalar) == ("prediction", "score")


def test_only_class_scores_on_torchserve_paths_are_read_as_such() -> None:
    scores = json.dumps({"cat": 0.2, "dog": 0.7, "eel": 0.1}).encode()
    assert parse_response(scores, path="/predictions/pets").rows == [
        {"prediction": "dog", "score": 0.7}
    ]
    assert parse_response(scores, path="/predict").rows == [{"cat": 0.2, "dog": 0.7, "eel": 0.1}]
    for other in ({"count": 3, "ratio": 0.5}, {"a": 1, "b": 0}, {"cat": 0.9, "tag": "x"}, {}):
        body = json.dumps(other).encode()
        assert parse_response(body, path="/predictions/pets").rows == ([other] if other else [{}])


def test_vllm_chat_completion(tmp_path: Path) -> None:
    got = logged(tmp_path, "vllm_chat.json")
    assert got["rows"]["input"] == [
        {"model": "NousResearch/Meta-Llama-3-8B-Instruct", "message_count": 2.0,
         "prompt_chars": 61.0, "max_tokens": 64.0, "temperature": 0.7}
    ]  # fmt: skip
    assert got["rows"]["output"] == [
        {"prompt_tokens": 37.0, "completion_tokens": 14.0, "finish_reason": "stop",
         "completion_chars": 53.0}
    ]  # fmt: skip
    # the path names no model: the body's model field does
    assert got["request"] == ("NousResearch/Meta-Llama-3-8B-Instruct", "ok", "ok")
    assert got["choice"].prediction == "finish_reason"


def test_vllm_streamed_completion(tmp_path: Path) -> None:
    got = logged(tmp_path, "vllm_completions_stream.json")
    assert got["rows"]["input"][0]["prompt_chars"] == 18.0
    assert got["rows"]["output"] == [
        {"prompt_tokens": 5.0, "completion_tokens": 7.0, "finish_reason": "length",
         "completion_chars": 23.0}
    ]  # fmt: skip
    assert got["choice"].prediction == "finish_reason"


def test_mlflow_dataframe_split(tmp_path: Path) -> None:
    got = logged(tmp_path, "mlflow_dataframe_split.json")
    assert got["rows"]["input"] == [
        {"alcohol": 12.8, "chlorides": 0.029, "citric acid": 0.48},
        {"alcohol": 9.4, "chlorides": 0.076, "citric acid": 0.0},
    ]
    assert got["rows"]["output"] == [{"prediction": 6.0}, {"prediction": 5.0}]
    assert got["request"][0] is None and got["choice"].prediction == "prediction"


def test_mlflow_column_inputs_and_plain_list(tmp_path: Path) -> None:
    got = logged(tmp_path, "mlflow_inputs_records.json")
    assert got["rows"]["input"] == [
        {"alcohol": 12.8, "chlorides": 0.029},
        {"alcohol": 9.4, "chlorides": 0.076},
    ]
    assert got["rows"]["output"] == [{"prediction": 6.0}, {"prediction": 5.0}]


def test_triton_binary_tensor_data(tmp_path: Path) -> None:
    got = logged(tmp_path, "triton_binary.json")
    assert got["rows"]["input"] == [
        {"INPUT0[0]": 1.0, "INPUT0[1]": 2.0, "INPUT1": "red"},
        {"INPUT0[0]": 3.0, "INPUT0[1]": 4.0, "INPUT1": "green"},
    ]
    assert got["rows"]["output"] == [{"OUTPUT0": 0.25}, {"OUTPUT0": 0.75}]
    assert got["request"] == ("simple", "ok", "ok")
    assert (got["choice"].prediction, got["choice"].reason) == ("OUTPUT0", "the only output")
