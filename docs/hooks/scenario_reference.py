"""MkDocs hook: the scenario reference, generated from the pydantic schema so it cannot drift.

`docs/scenarios.md` holds the marker `<!-- scenario-reference -->`; at build time it is replaced by
one table per section of a scenario file (top level, `target`, `target.server`, `load`,
`load.stages[]`, ...), walking `harness.scenario.schema.Scenario.model_fields` recursively. Each
row: key path, type, default, constraints, description (the field's `description=`, else empty).

Nothing here knows the keys: a field added to the schema appears in the reference on the next
build, a removed one disappears, and a changed default or bound shows as it is.
"""
from __future__ import annotations

import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- scenario-reference -->"
log = logging.getLogger("mkdocs.hooks.scenario_reference")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())


def reference() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from harness.scenario import schema

    sections: list[tuple[str, type[BaseModel]]] = []
    walk(schema.Scenario, "", sections)
    out = []
    for path, model in sections:
        title = f"`{path}`" if path else "Top level"
        out.append(f"### {title} {{#{anchor_of(path)}}}\n")
        doc = (model.__dict__.get("__doc__") or "").strip()
        if doc and path:
            out.append(" ".join(doc.split("\n\n")[0].split()) + "\n")
        out.append("| key | type | default | constraints | description |")
        out.append("|---|---|---|---|---|")
        for name, field in model.model_fields.items():
            key = f"{path}.{name}" if path else name
            nested, in_list = nested_model(field.annotation)
            kind = cell(type_name(field.annotation))
            if nested is not None:  # link the nested section's own table
                words, label = ("list of section", "list of sections") if in_list else ("section", "section")
                kind = kind.replace(words, f"[{label}](#{anchor_of(key + ('[]' if in_list else ''))})", 1)
            out.append("| " + " | ".join([
                f"`{key}`", kind, cell(default(field)),
                cell(constraints(field)), cell(" ".join((field.description or "").split())),
            ]) + " |")
        out.append("")
    return "\n".join(out)


def anchor_of(path: str) -> str:
    return "key-" + (path.replace(".", "-").replace("[]", "") or "top")


def walk(model: type[BaseModel], path: str, sections: list[tuple[str, type[BaseModel]]]) -> None:
    """Depth-first, in field order: a section, then the sections nested in it."""
    sections.append((path, model))
    for name, field in model.model_fields.items():
        nested, in_list = nested_model(field.annotation)
        if nested is not None:
            key = f"{path}.{name}" if path else name
            walk(nested, key + ("[]" if in_list else ""), sections)


def nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly, optionally, or as list items), and whether it is a list."""
    for arg in (annotation, *_union_args(annotation)):
        if _is_model(arg):
            return arg, False
        if typing.get_origin(arg) is list:
            (item,) = typing.get_args(arg) or (None,)
            if _is_model(item):
                return item, True
    return None, False


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return ()


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        validators = [getattr(m, "func", None) for m in meta]
        if any(getattr(v, "__name__", "") == "_check_threshold" for v in validators):
            return "threshold"
        return type_name(base)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"list of {type_name(item)}"
    if origin is dict:
        key, value = typing.get_args(annotation) or (Any, Any)
        return f"mapping {type_name(key)} → {type_name(value)}"
    if _is_model(annotation):
        return "section"
    name = getattr(annotation, "__name__", str(annotation))
    return {"Duration": "duration", "Fraction": "tolerance", "str": "string", "int": "integer",
            "float": "number", "bool": "boolean"}.get(name, name)


def default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    return show(value)


def show(value: Any) -> str:
    kind = type(value).__name__
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if kind == "Duration":
        return f"`{value:g}s`"
    if kind == "Fraction":
        return f"`{value * 100:g}%`"
    if isinstance(value, (list, dict)) and not value:
        return f"`{value!r}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, float) and value.is_integer():
        return f"`{value:g}`"
    return f"`{value!r}`"


BOUNDS = {annotated_types.Ge: ("ge", "≥ {}"), annotated_types.Gt: ("gt", "> {}"),
          annotated_types.Le: ("le", "≤ {}"), annotated_types.Lt: ("lt", "< {}")}


def constraints(field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for kind, (attr, text) in BOUNDS.items():
            if isinstance(meta, kind):
                bound = getattr(meta, attr)
                parts.append(text.format(f"{bound:g}" if isinstance(bound, float) else bound))
        if isinstance(meta, annotated_types.MinLen):
            parts.append(f"at least {meta.min_length} item(s)" if meta.min_length != 1 else "not empty")
        if isinstance(meta, annotated_types.MaxLen):
            parts.append(f"at most {meta.max_length} item(s)")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    if any(p.startswith("at least") for p in parts) and any(p.startswith("at most") for p in parts):
        low = next(p for p in parts if p.startswith("at least")).split()[2]
        high = next(p for p in parts if p.startswith("at most")).split()[2]
        if low == high:
            parts = [p for p in parts if not p.startswith(("at least", "at most"))] + [f"exactly {low} items"]
    return ", ".join(parts)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
