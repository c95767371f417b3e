from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from inferwatch import Engine, Settings
from inferwatch.middleware.settings import SETTING_FIELDS
from inferwatch.sidecar._cli import main
from tests.conftest import ROOT, make_capture


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


def log_models(db: str, shifts: dict[str, float], rows: int = 400) -> None:
    """Traffic to several models behind one server, each model's ``x`` shifted by its own."""
    rng = random.Random(3)
    engine = Engine(Settings.load({"db": db}, environ={}))
    engine.start()
    for model, shift in shifts.items():
        for i in range(rows // 10):
            body = json.dumps(
                {
                    "instances": [
                        {"x": rng.gauss(shift, 1), "kind": rng.choice("pq")} for _ in range(10)
                    ]
                }
            ).encode()
            capture = make_capture(f"{model}-{i}", body)._replace(
                path=f"/v1/models/{model}:predict"
            )
            engine.queue.put(capture)
    engine.stop()


def test_check_of_one_model_reads_its_rows_and_its_baseline(
    tmp_path: Path, baseline: Path, db_path: str
) -> None:
    log_models(db_path, {"calm": 0.0, "shifted": 3.0})
    args = ["check", "--db", db_path, "--format", "json"]
    whole = CliRunner().invoke(main, [*args, "--baseline", str(baseline)])
    assert json.loads(whole.output)["window"]["rows"] == 800
    for model, code in (("calm", 0), ("shifted", 1)):
        result = CliRunner().invoke(main, [*args, "--baseline", str(baseline), "--model", model])
        assert result.exit_code == code, result.output
        report = json.loads(result.output)
        assert report["model"] == model and report["window"]["rows"] == 400
        assert ("x" in report["drifted_features"]) is (code == 1)
    folder = tmp_path / "baselines"
    folder.mkdir()
    shifted = tmp_path / "shifted.csv"
    write_csv(shifted, 4000, shift=3.0)
    built = CliRunner().invoke(
        main, ["baseline", "build", str(shifted), "--out", str(folder / "shifted.json")]
    )
    assert built.exit_code == 0, built.output
    # its own baseline, built from shifted data, finds the shifted model's traffic as usual
    own = CliRunner().invoke(main, [*args, "--baselines", str(folder), "--model", "shifted"])
    assert own.exit_code == 0, own.output
    assert json.loads(own.output)["baseline"]["path"] == str(folder / "shifted.json")
    missing = _inferwatch("check", "--db", db_path, "--baselines", str(folder), "--model", "calm")
    assert missing.returncode == 2
    assert missing.stderr == (
        "Error: No baseline for model 'calm' in --baselines (models: shifted).\n"
    )


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


# ------------------------------------------------------------------ nothing to check


def _inferwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a process of its own, with no INFERWATCH_* but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "inferwatch", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_takes_the_store_from_its_environment_twin(baseline: Path, db_path: str) -> None:
    log_traffic(db_path, 1000, 0.0)
    done = _inferwatch(
        "check", env={"INFERWATCH_DB": db_path, "INFERWATCH_BASELINE": str(baseline)}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("status: ok  (1000 rows")


def test_check_on_an_empty_store_exits_3(baseline: Path, db_path: str) -> None:
    log_traffic(db_path, 0, 0.0)
    done = _inferwatch("check", "--db", db_path, "--baseline", str(baseline))
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("status: insufficient_data  (0 rows")
    assert (
        done.stderr
        == "Nothing to check: 0 rows in the window, 100 needed (--window, --min-rows).\n"
    )


@pytest.mark.parametrize(
    ("args", "rows"),
    [(["--until", "2000-01-01T00:00:00"], 0), (["--min-rows", "500"], 200)],
)
def test_check_of_too_few_rows_in_the_window_exits_3(
    baseline: Path, db_path: str, args: list[str], rows: int
) -> None:
    log_traffic(db_path, 200, 0.0)
    result = CliRunner().invoke(
        main, ["check", "--db", db_path, "--baseline", str(baseline), "--format", "json", *args]
    )
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "insufficient_data"
    assert report["window"]["rows"] == rows


def test_check_of_a_zero_window_is_bad_input(baseline: Path, db_path: str) -> None:
    log_traffic(db_path, 200, 0.0)
    result = CliRunner().invoke(
        main, ["check", "--db", db_path, "--baseline", str(baseline), "--window", "0"]
    )
    assert result.exit_code == 2
    assert result.stderr == "Error: Bad value for setting window: it must be above zero.\n"


# ------------------------------------------------------------------ a missing baseline


def test_a_missing_baseline_stops_the_sidecar_with_one_line(tmp_path: Path) -> None:
    done = _inferwatch(
        "sidecar", "--upstream", "http://127.0.0.1:9", "--host", "127.0.0.1", "--port", "0",
        "--admin-host", "127.0.0.1", "--admin-port", "0", "--db", str(tmp_path / "s.duckdb"),
        "--baseline", str(tmp_path / "missing.json"),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "Error: Bad value for setting baseline: cannot read baseline file "
        f"{tmp_path / 'missing.json'}: No such file or directory.\n"
    )


def test_a_missing_baseline_stops_check_with_one_line(tmp_path: Path, db_path: str) -> None:
    log_traffic(db_path, 100, 0.0)
    done = _inferwatch("check", "--db", db_path, env={"INFERWATCH_BASELINE": "missing.json"})
    assert done.returncode == 2
    assert done.stderr == (
        "Error: Bad value for --baseline: cannot read baseline file missing.json: "
        "No such file or directory.\n"
    )


# ------------------------------------------------------------------ one shape


def _commands(group: click.Group = main, prefix: str = "") -> dict[str, click.Command]:
    found = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def test_every_setting_has_one_flag_type_default_and_help_in_every_command() -> None:
    fields = {spec.name for spec in SETTING_FIELDS}
    seen: dict[str, dict[str, tuple]] = {}
    for path, command in _commands().items():
        for param in command.params:
            if param.name in fields:
                # The same words, and the same environment twin; a command may require it.
                words, note = param.help.split(" [", 1)  # type: ignore[attr-defined]
                env = note.rstrip("]").split("; ")[-1]
                shape = (tuple(param.opts), param.metavar, words, env, param.default)
                seen.setdefault(param.name, {})[path] = shape
            elif isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{path} {param.opts[0]} has no help"
    assert set(seen["db"]) == {"check", "collector", "export", "labels import", "sidecar"}
    assert set(seen["port"]) == {"demo", "sidecar"}
    for name, shapes in seen.items():
        assert len(set(shapes.values())) == 1, (name, shapes)
    assert seen["window"]["check"][1] == "DURATION"
    assert seen["min_rows"]["check"][1] == "COUNT"


def test_sidecar_help_is_short_with_the_required_flag_first() -> None:
    result = CliRunner().invoke(main, ["sidecar", "--help"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) <= 70, len(lines)
    first = next(i for i, line in enumerate(lines) if line.startswith("  --upstream URL"))
    assert first < 12 and lines[first - 1] == "Required:"
    assert "[required; env INFERWATCH_UPSTREAM]" in " ".join(result.output.split())
    assert "default: 1m;" in result.output and "default: 1MiB;" in result.output
    assert "60.0" not in result.output and "1048576" not in result.output
    assert "--flush-interval" not in result.output
    everything = CliRunner().invoke(main, ["sidecar", "--help-all"])
    assert "--flush-interval DURATION" in everything.output
    assert "default: 500ms;" in everything.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["check", "--baseline", "{baseline}", "--until", "yesterday"], "--until"),
        (["check", "--baseline", "{baseline}", "--db", "{csv}"], "--db"),
        (["check", "--baseline", "{baseline}", "--db", "{dir}/none.duckdb"], "--db"),
        (["check", "--baseline", "{baseline}", "--windw", "1h"], "--windw"),
        (["check", "--baseline", "{baseline}", "--window", "5x"], "--window"),
        (["check", "--baseline", "{baseline}", "--min-rows", "many"], "--min-rows"),
        (["check", "--baseline", "{baseline}", "--format", "xml"], "--format"),
        (["check"], "--baseline"),
        (["export", "--db", "{csv}", "--out", "{dir}/out"], "--db"),
        (["export", "--db", "{csv}", "--out", "{dir}/out", "--since", "yesterday"], "--since"),
        (["export", "--db", "{csv}"], "--out"),
        (["labels", "import", "{csv}", "--db", "{csv}"], "--db"),
        (["baseline", "build", "{dir}/none.csv"], "DATA"),
        (["baseline", "build", "{csv}", "--bins", "1"], "--bins"),
        (["sidecar"], "--upstream"),
        (["sidecar", "--upstream", "http://127.0.0.1:9", "--sample-rate", "2"], "--sample-rate"),
        (["demo", "--phase", "1x"], "--phase"),
        (["demo", "--rate", "fast"], "--rate"),
    ],
)
def test_every_error_is_one_line_naming_the_flag(
    tmp_path: Path, baseline: Path, args: list[str], named: str
) -> None:
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("a,b\n1,2\n")
    values = {"baseline": str(baseline), "csv": str(csv_file), "dir": str(tmp_path)}
    done = _inferwatch(*(arg.format(**values) for arg in args))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: ") and named in done.stderr, done.stderr
    for raw in ("Usage:", "Try '", "isoformat", "Catalog Error", "Traceback"):
        assert raw not in done.stderr
