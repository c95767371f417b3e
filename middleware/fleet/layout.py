"""Where the fleet's Parquet files live, and how one is written there whole or not at all.

The layout (docs/fleet.md) is two Hive-partitioned tables under one URL::

    URL/summaries/model=M/date=YYYY-MM-DD/hour=HH/replica=R/summaries-YYYYMMDDTHH.parquet
    URL/raw/model=M/date=YYYY-MM-DD/hour=HH/replica=R/raw-YYYYMMDDTHH.parquet

One file per table, model, hour and replica, with a name fixed by them: shipping an hour again
replaces its file, so no reader ever counts a minute twice. Local folders get a temporary
name beginning with a dot (which Hive, Spark, Trino and ``*.parquet`` globs skip) and
``os.replace``; object stores get one PUT of the whole file (s3fs turns a large one into a
multipart upload, which appears only once completed).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import MonitorError

__all__ = [
    "NULL_PARTITION",
    "FleetStorage",
    "decode_value",
    "encode_value",
    "file_path",
    "storage_options",
]

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
"""The partition value of rows with no model (Hive's name for NULL, which Spark and Trino read
back as NULL)."""

# The characters Hive escapes in partition values (FileUtils.escapePathName), as %XX.
_ESCAPED = frozenset("\"#%'*/:=?\\\x7f{[]^")


def encode_value(value: str | None) -> str:
    """A partition value as Hive writes it in a path: NULL as ``NULL_PARTITION``."""
    if value is None or value == "":
        return NULL_PARTITION
    return "".join(
        f"%{ord(char):02X}" if char in _ESCAPED or ord(char) < 0x20 else char for char in value
    )


def decode_value(text: str) -> str | None:
    """The value :func:`encode_value` wrote."""
    if text == NULL_PARTITION:
        return None
    out, index = [], 0
    while index < len(text):
        if text[index] == "%" and _is_hex(text[index + 1 : index + 3]):
            out.append(chr(int(text[index + 1 : index + 3], 16)))
            index += 3
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def file_path(table: str, model: str | None, hour: datetime, replica: str) -> str:
    """The path, below the fleet URL, of one table's file for a model, an hour and a replica."""
    return (
        f"{table}/model={encode_value(model)}/date={hour:%Y-%m-%d}/hour={hour:%H}/"
        f"replica={encode_value(replica)}/{table}-{hour:%Y%m%dT%H}.parquet"
    )


def storage_options(text: str | None) -> dict[str, Any]:
    """The ``fleet_storage_options`` setting as keyword arguments for fsspec."""
    from ..alerts.channels import read_secret

    text = read_secret("fleet_storage_options", text)
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise MonitorError(f"Bad value for setting fleet_storage_options: {exc}.") from exc
    if not isinstance(options, dict):
        raise MonitorError("Bad value for setting fleet_storage_options: not a JSON object.")
    return options


@dataclass
class FleetStorage:
    """One fleet URL opened through fsspec: files written whole, listed and read back."""

    url: str
    fs: Any
    root: str
    local: bool

    @classmethod
    def open(cls, url: str, options: dict[str, Any] | None = None) -> FleetStorage:
        """Open ``url`` (a folder, ``file://``, ``s3://bucket/prefix``, any fsspec URL)."""
        try:
            import fsspec
            import pyarrow  # noqa: F401 - the files are written with it
        except ImportError as exc:
            raise MonitorError(
                "Shipping to a fleet needs fsspec and pyarrow: pip install 'inferwatch[fleet]'."
            ) from exc
        try:
            fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except (ImportError, ValueError, TypeError) as exc:
            raise MonitorError(f"Cannot open the fleet storage {url!r}: {exc}") from exc
        local = "file" in _protocols(fs)
        return cls(url, fs, root.rstrip("/"), local)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative

    def uri(self, relative: str = "") -> str:
        """A full address readers open (with the protocol for object stores)."""
        full = self.path(relative) if relative else self.root
        return full if self.local else f"{_protocols(self.fs)[0]}://{full}"

    def write(self, relative: str, data: bytes) -> None:
        """Put ``data`` at ``relative``: readers see the old file or the new one, never part."""
        path = self.path(relative)
        if not self.local:
            # one PUT (a multipart upload above s3fs's block size): nothing shows before it ends
            self.fs.pipe_file(path, data)
            return
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        _remove_leftovers(folder, name)
        temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def glob(self, pattern: str) -> list[str]:
        """Files matching ``pattern`` (relative to the URL), as full paths of this filesystem."""
        return sorted(self.fs.glob(self.path(pattern)))


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _remove_leftovers(folder: str, name: str) -> None:
    """Temporary files of this name that a killed process left (only this replica writes here)."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            if entry.startswith(f".{name}.") and entry.endswith(".tmp"):
                pid = entry[len(name) + 2 : -4]
                if pid.isdigit() and not _alive(int(pid)):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, entry))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
