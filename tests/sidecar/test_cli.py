from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from middleware import Engine, Settings
from sidecar._cli import main
from tests.conftest import make_capture


def write_csv(path: Path, rows: int, shift: float = 0.0) -> None:
    rng = random.Random(1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "kind"])
        for _ in range(rows):
            writer.writerow([rng.gauss(shift, 1), rng.choice("pq")])


def log_traffic(db: str, rows: int, shift: float) -> list[str]:
    rng = random.Random(2)
    engine = Engine(Settings.load({"db": db}, environ={}))
    engine.start()
    ids = []
    for i in range(rows // 10):
        body = json.dumps(
            {"instances": [{"x": rng.gauss(shift, 1), "kind": rng.choice("pq")} for _ in range(10)]}
        ).encode()
        ids.append(f"r{i}")
        answer = json.dumps({"predictions": ["p"] * 10}).encode()
        engine.queue.put(make_capture(f"r{i}", body, answer))
    engine.stop()
    return ids


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    data = tmp_path / "train.csv"
    write_csv(data, 4000)
    out = tmp_path / "baseline.json"
    result = CliRunner().invoke(main, ["baseline", "build", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 features" in result.output
    return out


@pytest.mark.parametrize(("shift", "code", "status"), [(0.0, 0, "ok"), (3.0, 1, "alert")])
def test_check_exit_codes(
    baseline: Path, db_path: str, shift: float, code: int, status: str
) -> None:
    log_traffic(db_path, 1000, shift)
    args = ["check", "--db", db_path, "--baseline", str(baseline), "--format", "json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    assert json.loads(result.output)["status"] == status
    text = CliRunner().invoke(main, args[:-2])
    assert text.output.startswith(f"status: {status}")


@pytest.mark.parametrize(
    "args",
    [
        ["--db", "/nonexistent.duckdb"],
        ["--window", "soon"],
    ],
)
def test_check_bad_input_exits_2(baseline: Path, db_path: str, args: list[str]) -> None:
    log_traffic(db_path, 100, 0.0)
    base = {"--db": db_path, "--baseline": str(baseline), "--window": "1h"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [item for pair in base.items() for item in pair]
    result = CliRunner().invoke(main, ["check", *flat])
    assert result.exit_code == 2


def test_check_with_a_broken_baseline_exits_2(tmp_path: Path, db_path: str) -> None:
    log_traffic(db_path, 100, 0.0)
    broken = tmp_path / "b.json"
    broken.write_text("[1, 2")
    result = CliRunner().invoke(main, ["check", "--db", db_path, "--baseline", str(broken)])
    assert result.exit_code == 2
    assert "Error:" in result.output


def test_labels_import(tmp_path: Path, db_path: str) -> None:
    ids = log_traffic(db_path, 100, 0.0)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "request_id,index,label\n" + "".join(f"{rid},3,p\n" for rid in ids) + "ghost,0,q\n"
    )
    result = CliRunner().invoke(main, ["labels", "import", str(labels), "--db", db_path])
    assert result.exit_code == 0, result.output
    assert "11 labels accepted, 10 matched a captured prediction, 1 did not" in result.output


def test_baseline_build_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["baseline", "build", str(tmp_path / "none.csv")])
    assert result.exit_code == 2
