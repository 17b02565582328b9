"""Request bodies and prebuilt request bytes: inline JSON, a JSON file, or seeded random tensors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from harness.scenario.loading import resolve
from harness.scenario.schema import Generate, Scenario

ARTICLE_PAYLOAD = {"inputs": [[1.0, 2.0, 3.0]]}


def bodies(scenario: Scenario, base_dir: Path) -> list[bytes]:
    """Every body variant a run cycles through (one unless `generate.variants` > 1)."""
    target = scenario.target
    if target.method == "GET":
        return [b""]
    if target.payload_file is not None:
        return [resolve(base_dir, target.payload_file).read_bytes()]
    if target.generate is not None:
        return generated_bodies(target.generate)
    payload = ARTICLE_PAYLOAD if target.payload is None else target.payload
    return [orjson.dumps(payload)]


def generated_bodies(spec: Generate) -> list[bytes]:
    rng = np.random.default_rng(spec.seed)
    out = []
    for _ in range(spec.variants):
        rows = rng.uniform(spec.low, spec.high, size=tuple(spec.shape)).astype(np.float32)
        out.append(orjson.dumps(_document(spec, rows), option=orjson.OPT_SERIALIZE_NUMPY))
    return out


def _document(spec: Generate, rows: np.ndarray) -> dict[str, Any]:
    if spec.format == "v2":
        return {"inputs": [{"name": spec.input_name, "shape": list(rows.shape), "datatype": "FP32",
                            "data": rows.reshape(-1)}]}
    return {"inputs": rows}
