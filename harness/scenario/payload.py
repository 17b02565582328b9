"""Request bodies: inline JSON, a JSON file, or seeded random tensors (JSON or binary v2).

A binary v2 body is Triton's binary tensor data extension: a JSON header whose input carries
`parameters: {binary_data_size: N}`, then the tensor's N raw little-endian FP32 bytes; the
`Inference-Header-Content-Length` header (`body_headers`) says where the JSON ends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from harness.scenario.loading import resolve
from harness.scenario.schema import Generate, RequestKind, Scenario, Target

ARTICLE_PAYLOAD = {"inputs": [[1.0, 2.0, 3.0]]}


def bodies(scenario: Scenario, base_dir: Path, model: str | None = None) -> list[bytes]:
    """Every body variant a run cycles through (one unless `generate.variants` > 1, or the prompt
    variants of a generative api, which name `model`)."""
    target = scenario.target
    if target.api is not None:
        from harness.scenario.prompts import synthetic_bodies

        return [] if target.dataset is not None else synthetic_bodies(target, model or target.model or "")
    if target.method == "GET":
        return [b""]
    trace = scenario.load.trace
    if trace is not None and trace.body_field is not None:  # one body per arrival, in replay order
        from harness.scenario.plan import read_scenario_trace

        return list(read_scenario_trace(scenario).bodies or ())
    return source_bodies(target, target.method, base_dir)


def source_bodies(source: Target | RequestKind, method: str, base_dir: Path) -> list[bytes]:
    """The body variants of the target or of one kind of request of a mix."""
    if method == "GET":
        return [b""]
    if source.payload_file is not None:
        return [resolve(base_dir, source.payload_file).read_bytes()]
    if source.generate is not None:
        return generated_bodies(source.generate)
    payload = ARTICLE_PAYLOAD if source.payload is None else source.payload
    return [orjson.dumps(payload)]


BINARY_HEADER = "Inference-Header-Content-Length"


def body_headers(scenario: Scenario) -> dict[str, str]:
    """Headers the bodies themselves need (a binary v2 body's JSON length and content type)."""
    return source_headers(scenario.target, scenario.target.method)


def source_headers(source: Target | RequestKind, method: str) -> dict[str, str]:
    """body_headers of the target or of one kind of request of a mix."""
    spec = source.generate
    if spec is None or spec.format != "v2-binary" or method == "GET":
        return {}
    return {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(_binary_header(spec)))}


def generated_bodies(spec: Generate) -> list[bytes]:
    rng = np.random.default_rng(spec.seed)
    out = []
    for _ in range(spec.variants):
        rows = rng.uniform(spec.low, spec.high, size=tuple(spec.shape)).astype(np.float32)
        if spec.format == "v2-binary":
            out.append(_binary_header(spec) + rows.astype("<f4").tobytes())
        else:
            out.append(orjson.dumps(_document(spec, rows), option=orjson.OPT_SERIALIZE_NUMPY))
    return out


def _binary_header(spec: Generate) -> bytes:
    """The JSON part of a binary v2 body: the same for every variant (one shape, one name)."""
    rows, columns = spec.shape
    return orjson.dumps({"inputs": [{"name": spec.input_name, "shape": [rows, columns], "datatype": "FP32",
                                     "parameters": {"binary_data_size": rows * columns * 4}}]})


def _document(spec: Generate, rows: np.ndarray) -> dict[str, Any]:
    if spec.format == "v2":
        return {"inputs": [{"name": spec.input_name, "shape": list(rows.shape), "datatype": "FP32",
                            "data": rows.reshape(-1)}]}
    return {"inputs": rows}
