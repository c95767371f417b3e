"""One import name: the distribution installs ``inferwatch`` and nothing with a generic name.

The repository keeps ``middleware/`` and ``sidecar/`` at its top; pyproject's ``package-dir``
installs them as ``inferwatch.middleware`` and ``inferwatch.sidecar``. Checked on a real install
(``pip install`` of this repository into a fresh virtual environment, not editable) from a
directory outside the checkout, and with a model app that has a ``middleware/`` folder of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_collector_gone, wait_until


def test_pyproject_installs_every_package_of_the_tree() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {"inferwatch"}
    for top in ("middleware", "sidecar"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add(".".join(("inferwatch", *rel)))
    assert set(setuptools["packages"]) == found
    assert setuptools["package-dir"] == {
        "inferwatch": "inferwatch",
        "inferwatch.middleware": "middleware",
        "inferwatch.sidecar": "sidecar",
    }


_NOT_SOURCE = (
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "*.duckdb*",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with this repository pip-installed (not editable); its
    dependencies are this interpreter's, seen through a .pth file, so nothing is downloaded
    but the build backend pip's isolated build asks for."""
    home = tmp_path_factory.mktemp("venv")
    try:
        venv.EnvBuilder(with_pip=False).create(home)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot create a virtual environment here: {exc}")
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies' folders, after the venv's own. A .pth file in them (this checkout's
    # editable install) is not read: Python reads those of site folders only.
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(purelib, "zz_dependencies.pth").write_text("\n".join(deps) + "\n")
    # from a copy: a build in the checkout would leave build/ behind, and reuse it next time
    source = tmp_path_factory.mktemp("source") / "inferwatch"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(source)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path_factory.mktemp("pip"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    yield home


def _run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_an_install_imports_as_inferwatch_only(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    done = _run(
        python,
        "import inferwatch, inferwatch.middleware, inferwatch.sidecar;"
        "from inferwatch import MonitorMiddleware, MonitorError, Settings, Engine;"
        "from inferwatch.middleware.api.dashboard import dashboard_page;"
        "print(inferwatch.__file__); print(inferwatch.middleware.__file__)",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    files = done.stdout.split()
    assert all(Path(f).is_relative_to(installed) for f in files), files
    assert Path(files[1]).parent.parent == Path(files[0]).parent  # inferwatch/middleware
    for generic in ("middleware", "sidecar"):
        done = _run(python, f"import {generic}", tmp_path)
        assert done.returncode == 1
        assert f"No module named '{generic}'" in done.stderr
    purelib = Path(files[0]).parent.parent
    assert not (purelib / "middleware").exists() and not (purelib / "sidecar").exists()
    # the command line, both ways
    for command in ([str(installed / "bin" / "inferwatch"), "--help"], [python, "-m", "inferwatch",
                    "--help"]):  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert done.returncode == 0 and "Usage: inferwatch" in done.stdout, done.stderr


def test_an_app_beside_its_own_middleware_folder_runs_monitored(
    installed: Path, tmp_path: Path
) -> None:
    (tmp_path / "middleware").mkdir()
    (tmp_path / "middleware" / "__init__.py").write_text(
        'def served_by() -> str:\n    return "the app\'s own middleware package"\n'
    )
    db = tmp_path / "monitor.duckdb"
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            f"""
            from starlette.applications import Starlette
            from starlette.requests import Request
            from starlette.responses import JSONResponse
            from starlette.routing import Route

            from inferwatch import MonitorMiddleware
            from middleware import served_by

            async def predict(request: Request) -> JSONResponse:
                rows = (await request.json())["instances"]
                return JSONResponse({{"predictions": [sum(r) for r in rows], "by": served_by()}})

            app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
            app.add_middleware(MonitorMiddleware, db={str(db)!r}, sample_rate=1.0)
            """
        )
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    server = subprocess.Popen(
        [installed / "bin" / "python", "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(url + "/monitor/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, "uvicorn exited"
                return False

        wait_until(ready, timeout=60)
        for i in range(20):
            answer = httpx.post(url + "/predict", json={"instances": [[i, 1.0]]}, timeout=10)
            assert answer.json() == {
                "predictions": [i + 1.0],
                "by": "the app's own middleware package",
            }

        def stored() -> bool:
            health = httpx.get(url + "/monitor/health", timeout=5).json()
            return health["capture"]["stored"] == 20

        wait_until(stored, timeout=60)
    finally:
        server.terminate()
        server.wait(30)
        wait_collector_gone(str(db))
