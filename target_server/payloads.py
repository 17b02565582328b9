"""Turning request bodies into input matrices, refusing anything malformed with a precise 4xx reason.

Wire formats: the article's `{"inputs": [[...], ...]}`, KServe v1 (`{"instances": ...}`) and the
KServe/Triton v2 protocol, in JSON or with Triton's binary tensor data extension.
Parsing uses orjson (C, bounded recursion depth) and one numpy conversion; per-element Python
loops are avoided so validation stays cheap next to Flask's own cost.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import orjson

BINARY_DTYPES = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
                 "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}
V2_NUMERIC_TYPES = set(BINARY_DTYPES)
INPUT_NAME, OUTPUT_NAME = "input-0", "output-0"


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


def split_binary(body: bytes, header_length: str) -> tuple[bytes, bytes]:
    """Triton's binary tensor extension: the first Inference-Header-Content-Length bytes are JSON."""
    try:
        length = int(header_length.strip())
    except ValueError:
        raise BadInput(f"Inference-Header-Content-Length must be a number of bytes, got {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise BadInput(f"Inference-Header-Content-Length says the JSON header is {length} bytes; "
                       f"the body has {len(body)}")
    return body[:length], body[length:]


def parse_v2(body: bytes, *, width: int, max_rows: int,
             binary: bytes | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """KServe v2: one input tensor of shape [rows, width] as nested or flat JSON data, or as raw
    little-endian bytes after the JSON header (`binary`, with `parameters.binary_data_size`);
    returns (matrix, request)."""
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
    size = _binary_size(tensor)
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor and not (k == "data" and size is not None)]
    if missing:
        raise BadInput(f"inputs[0] lacks {', '.join(missing)}")
    if size is not None and "data" in tensor:
        raise BadInput("inputs[0] has both data and parameters.binary_data_size; send one")
    shape, datatype = tensor["shape"], tensor["datatype"]
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
    _check_outputs(doc)
    if size is not None:
        return _binary_matrix(binary, size, rows, cols, datatype), doc
    if binary:
        raise BadInput(f"the body has {len(binary)} bytes after its JSON header, but no input "
                       "declares parameters.binary_data_size")
    data = tensor["data"]
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


def _binary_size(tensor: dict[str, Any]) -> int | None:
    parameters = tensor.get("parameters")
    if parameters is None or not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        if parameters is not None and not isinstance(parameters, dict):
            raise BadInput("inputs[0].parameters must be an object")
        return None
    size = parameters["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadInput(f"inputs[0].parameters.binary_data_size must be a non-negative integer, got {size!r}")
    return size


def _binary_matrix(binary: bytes | None, size: int, rows: int, cols: int, datatype: str) -> np.ndarray:
    if binary is None:
        raise BadInput("inputs[0] declares binary_data_size, but the request has no "
                       "Inference-Header-Content-Length header saying where its JSON ends")
    if size != len(binary):
        raise BadInput(f"inputs[0] declares binary_data_size {size}, but {len(binary)} bytes follow the JSON header")
    dtype = np.dtype(BINARY_DTYPES[datatype])
    if size != rows * cols * dtype.itemsize:
        raise BadInput(f"inputs[0] has {size} bytes; shape [{rows}, {cols}] of {datatype} needs "
                       f"{rows * cols * dtype.itemsize}")
    if rows == 0:
        raise BadInput("inputs[0] is empty; send at least one row")
    with np.errstate(over="ignore", invalid="ignore"):
        matrix = np.frombuffer(binary, dtype=dtype).reshape(rows, cols).astype(np.float32)
    if not np.isfinite(matrix).all():
        raise BadInput("inputs[0] contains values that are not finite as float32 (NaN, Infinity or too large)")
    return matrix


def _check_outputs(doc: dict[str, Any]) -> None:
    """Requested outputs must name the model's one output; parameters must be objects."""
    if "parameters" in doc and not isinstance(doc["parameters"], dict):
        raise BadInput("parameters must be an object")
    outputs = doc.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise BadInput("outputs must be a list of {\"name\": ...} objects")
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or out.get("name") != OUTPUT_NAME:
            raise BadInput(f"outputs[{i}] must be {{\"name\": \"{OUTPUT_NAME}\"}}, this model's only output")
        if "parameters" in out and not isinstance(out["parameters"], dict):
            raise BadInput(f"outputs[{i}].parameters must be an object")


def wants_binary_output(doc: dict[str, Any]) -> bool:
    """Binary outputs when the request asks for them (per output, or all via binary_data_output)."""
    outputs = doc.get("outputs")
    if outputs:
        return any(out.get("parameters", {}).get("binary_data") is True for out in outputs)
    return doc.get("parameters", {}).get("binary_data_output") is True


def parse_v1(body: bytes, *, width: int, max_rows: int) -> np.ndarray:
    """KServe v1: {"instances": [[...], ...]} (or "inputs" instead of "instances")."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise BadInput(f"body must be a JSON object with an \"instances\" key, got {type(doc).__name__}")
    keys = [k for k in ("instances", "inputs") if k in doc]
    if len(keys) != 1:
        raise BadInput("send exactly one of \"instances\" or \"inputs\": {\"instances\": [[...], ...]}")
    return to_matrix(doc[keys[0]], width=width, max_rows=max_rows, where=keys[0],
                     may_hold_booleans=_mentions_booleans(body))


def v2_response(model_name: str, request_doc: dict[str, Any], outputs: np.ndarray) -> tuple[bytes, int | None]:
    """The v2 answer and, for binary outputs, the length of its JSON header (None: all JSON)."""
    tensor: dict[str, Any] = {"name": OUTPUT_NAME, "shape": list(outputs.shape), "datatype": "FP32"}
    body: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": [tensor]}
    if isinstance(request_doc.get("id"), str):
        body["id"] = request_doc["id"]
    if wants_binary_output(request_doc):
        raw = np.ascontiguousarray(outputs, dtype="<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = orjson.dumps(body)
        return header + raw, len(header)
    tensor["data"] = outputs.reshape(-1)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), None


def predict_response(outputs: np.ndarray) -> bytes:
    return orjson.dumps({"predictions": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)

