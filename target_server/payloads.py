"""Turning request bodies into input matrices, refusing anything malformed with a precise 4xx reason.

Two wire formats: the article's `{"inputs": [[...], ...]}` and the KServe/Triton v2 JSON protocol.
Parsing uses orjson (C, bounded recursion depth) and one numpy conversion; per-element Python
loops are avoided so validation stays cheap next to Flask's own cost.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import orjson

V2_NUMERIC_TYPES = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                    "UINT8", "UINT16", "UINT32", "UINT64"}


class BadInput(Exception):
    """A client mistake; carries the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadInput("empty request body; send JSON such as {\"inputs\": [[1.0, 2.0, 3.0]]}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"invalid JSON: {exc}") from None


def to_matrix(rows: Any, *, width: int, max_rows: int, where: str, may_hold_booleans: bool = True) -> np.ndarray:
    """Validate a list of equal-width numeric rows and return it as float32 (rows, width).

    numpy turns true/false mixed with numbers into 1.0/0.0, so booleans are looked for first, but
    only when the body has a `true` or `false` at all (`may_hold_booleans`: a fast byte search)."""
    if not isinstance(rows, list):
        raise BadInput(f"{where} must be a list of rows, got {type(rows).__name__}")
    if not rows:
        raise BadInput(f"{where} is empty; send at least one row")
    if len(rows) > max_rows:
        raise BadInput(f"{where} has {len(rows)} rows; the limit is {max_rows}", status=413)
    first = rows[0]
    if not isinstance(first, list):
        raise BadInput(f"{where} must be a list of rows (lists of numbers), "
                       f"e.g. [[1.0, 2.0, 3.0]]; {where}[0] is {type(first).__name__}")
    try:
        array = np.array(rows)
    except (ValueError, OverflowError):
        raise BadInput(f"{where} rows are ragged or not all numbers; every row needs {width} numbers") from None
    if array.dtype.kind not in "iuf" or (may_hold_booleans and _holds_booleans(rows)):
        raise BadInput(f"{where} contains non-numeric values (strings, booleans, nulls or objects); "
                       f"every value must be a number")
    if array.ndim != 2:
        raise BadInput(f"{where} must be a 2-D list of rows; got {array.ndim} dimension(s)")
    if array.shape[1] != width:
        raise BadInput(f"{where} rows have {array.shape[1]} values; this model expects {width}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is refused just below
        matrix = array.astype(np.float32)
    if not np.isfinite(matrix).all():
        raise BadInput(f"{where} contains values that are not finite as float32 (NaN, Infinity or too large)")
    return matrix


def _holds_booleans(rows: list[Any]) -> bool:
    return any(type(value) is bool for row in rows if isinstance(row, list) for value in row)


def _mentions_booleans(body: bytes) -> bool:
    return b"true" in body or b"false" in body


def parse_predict(body: bytes, *, width: int, max_rows: int) -> np.ndarray:
    """The article's format: {"inputs": [[...], ...]}."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise BadInput(f"body must be a JSON object with an \"inputs\" key, got {type(doc).__name__}")
    if "inputs" not in doc:
        raise BadInput("missing \"inputs\" key; send {\"inputs\": [[...], ...]}")
    return to_matrix(doc["inputs"], width=width, max_rows=max_rows, where="inputs",
                     may_hold_booleans=_mentions_booleans(body))


def parse_v2(body: bytes, *, width: int, max_rows: int) -> tuple[np.ndarray, dict[str, Any]]:
    """KServe v2: one input tensor of shape [rows, width], nested or flat data; returns (matrix, request)."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise BadInput(f"body must be a JSON object, got {type(doc).__name__}")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("\"inputs\" must be a non-empty list of tensors")
    if len(inputs) != 1:
        raise BadInput(f"this model takes exactly one input tensor, got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise BadInput("inputs[0] must be an object with name, shape, datatype and data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise BadInput(f"inputs[0] lacks {', '.join(missing)}")
    shape, datatype, data = tensor["shape"], tensor["datatype"], tensor["data"]
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise BadInput(f"inputs[0].shape must be [rows, {width}] with non-negative integers, got {shape!r}")
    if not isinstance(datatype, str) or datatype not in V2_NUMERIC_TYPES:
        raise BadInput(f"inputs[0].datatype {datatype!r} is not a numeric type "
                       f"({', '.join(sorted(V2_NUMERIC_TYPES))})")
    rows, cols = shape
    if cols != width:
        raise BadInput(f"inputs[0].shape is {shape}; this model expects [rows, {width}]")
    if rows > max_rows:
        raise BadInput(f"inputs[0] has {rows} rows; the limit is {max_rows}", status=413)
    if not isinstance(data, list):
        raise BadInput("inputs[0].data must be a list")
    if data and not isinstance(data[0], list):
        if len(data) != rows * cols:
            raise BadInput(f"inputs[0].data has {len(data)} values; shape {shape} needs {rows * cols}")
        if rows == 0:
            raise BadInput("inputs[0] is empty; send at least one row")
        data = [data[i * cols:(i + 1) * cols] for i in range(rows)]
    matrix = to_matrix(data, width=width, max_rows=max_rows, where="inputs[0].data",
                       may_hold_booleans=_mentions_booleans(body))
    if matrix.shape[0] != rows:
        raise BadInput(f"inputs[0].data has {matrix.shape[0]} rows; shape says {rows}")
    return matrix, doc


def v2_response(model_name: str, request_doc: dict[str, Any], outputs: np.ndarray) -> bytes:
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": "1",
        "outputs": [{"name": "output-0", "shape": list(outputs.shape), "datatype": "FP32",
                     "data": outputs.reshape(-1)}],
    }
    if isinstance(request_doc.get("id"), str):
        body["id"] = request_doc["id"]
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def predict_response(outputs: np.ndarray) -> bytes:
    return orjson.dumps({"predictions": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)

