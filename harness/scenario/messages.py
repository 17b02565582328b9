"""Pydantic validation errors as a scenario author reads them: `load.stages[2].duration: ...`."""
from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def format_error(err: Mapping[str, Any], root: type[BaseModel]) -> str:
    """`location: message` for one pydantic error; unknown keys get a did-you-mean hint."""
    loc = format_location(err["loc"])
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        allowed = allowed_keys(root, err["loc"][:-1])
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else (f"; allowed: {', '.join(allowed)}" if allowed else "")
        return f"{loc}: unknown key{hint}"
    message = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if err["type"] == "missing":
        message = "required key is missing"
    return f"{loc or '(top level)'}: {message}"


def format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        elif part in ("function-plain[<lambda>()]",) or str(part).startswith(("function-", "constrained-")):
            continue
        else:
            out += f".{part}"
    return out


def allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at `loc` may have, found by walking the schema from `root`."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    return sorted(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
