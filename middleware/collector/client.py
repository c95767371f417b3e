"""The command line's way to a store that a running collector holds: through its socket.

``inferwatch check`` and ``export`` read a consistent snapshot of the store (a copy the collector
takes after a checkpoint, with every response already sent in it); ``labels import`` hands the
file to the collector, which imports it on its writer thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx

from ..errors import MonitorError
from .election import collector_running
from .paths import CollectorPaths

__all__ = ["import_labels", "running_collector", "snapshot"]

_TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=600.0, pool=5.0)


def running_collector(db: str) -> CollectorPaths | None:
    """The paths of the collector that holds ``db`` now, or None when none does."""
    paths = CollectorPaths.for_db(db)
    if collector_running(paths) and os.path.exists(paths.api):
        return paths
    return None


def _client(paths: CollectorPaths) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=paths.api)
    return httpx.Client(transport=transport, base_url="http://collector", timeout=_TIMEOUT)


@contextlib.contextmanager
def snapshot(paths: CollectorPaths) -> Iterator[str]:
    """A consistent copy of the collector's store, removed on leaving the block."""
    folder = tempfile.mkdtemp(prefix="inferwatch-snapshot-")
    target = os.path.join(folder, "snapshot.duckdb")
    try:
        try:
            with _client(paths) as client, client.stream("GET", "/snapshot.duckdb") as answer:
                if answer.status_code != 200:
                    answer.read()
                    raise MonitorError(f"The collector could not copy the store: {answer.text}")
                with open(target, "wb") as out:
                    for chunk in answer.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise MonitorError(f"The collector of {paths.db!r} did not answer: {exc}") from exc
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def import_labels(paths: CollectorPaths, file: str) -> dict[str, Any]:
    """Import a label file through the collector; its counts (accepted, matched, unmatched)."""

    def chunks() -> Iterator[bytes]:
        with open(file, "rb") as source:
            while chunk := source.read(1 << 20):
                yield chunk

    headers = {"x-inferwatch-filename": os.path.basename(file)}
    try:
        with _client(paths) as client:
            answer = client.post("/labels/import", content=chunks(), headers=headers)
    except (httpx.HTTPError, OSError) as exc:
        raise MonitorError(f"Importing through the collector failed: {exc}") from exc
    if answer.status_code != 200:
        raise MonitorError(answer.json().get("error", answer.text))
    return answer.json()
