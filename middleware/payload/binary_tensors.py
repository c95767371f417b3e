"""The binary tensor data extension of the Open Inference Protocol (Triton, KServe).

A body is a JSON header followed by raw tensor bytes: each tensor whose ``parameters`` hold a
``binary_data_size`` has that many bytes, in header order, little-endian, row-major; ``BYTES``
elements are each a 4-byte length and that many bytes. Triton's own clients send and ask for
this by default. :func:`split_binary` turns such a body into the JSON object a plain body gives.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson

__all__ = ["split_binary"]

_MARK = b'"binary_data_size"'
_NUMPY = {
    "BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
_MAX_ELEMENTS = 10_000_000  # a header may claim any size; what is decoded stays bounded


def _strings(raw: bytes) -> list[str]:
    out, at = [], 0
    while at + 4 <= len(raw) and len(out) < _MAX_ELEMENTS:
        (size,) = struct.unpack_from("<I", raw, at)
        out.append(raw[at + 4 : at + 4 + size].decode("utf-8", "replace"))
        at += 4 + size
    return out


def split_binary(body: bytes) -> dict[str, Any] | None:
    """The header of a binary-extension body with each binary tensor's ``data`` filled in, or
    None when the body is not one (or its binary part does not match its header)."""
    if body[:1] != b"{" or _MARK not in body[:65536]:
        return None
    try:
        # latin-1 maps each byte to one character, so the end found is the header's byte length
        _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
        header = orjson.loads(body[:end])
    except (ValueError, RecursionError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    at = end
    for key in ("inputs", "outputs"):
        tensors = header.get(key)
        for spec in tensors if isinstance(tensors, list) else ():
            params = spec.get("parameters") if isinstance(spec, dict) else None
            size = params.get("binary_data_size") if isinstance(params, dict) else None
            if not isinstance(size, int) or size < 0:
                continue
            raw = body[at : at + size]
            if len(raw) < size:
                return None
            at += size
            kind = str(spec.get("datatype", "")).upper()
            if kind == "BYTES":
                spec["data"] = _strings(raw)
            elif kind in _NUMPY:
                width = np.dtype(_NUMPY[kind]).itemsize
                count = min(size // width, _MAX_ELEMENTS)
                spec["data"] = np.frombuffer(raw, _NUMPY[kind], count).tolist()
            else:
                return None
    return header
