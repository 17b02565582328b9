"""MkDocs hook: the Python API table from `harness.__all__`, and a check that the architecture
page's folder tree matches the files that exist.

- `<!-- python-api -->` is replaced by one row per name `harness/__init__.py` exports (what it is
  and the first line of its docstring), so the page lists exactly what `import harness` offers.
- The fenced tree after `<!-- layout-tree -->` in `architecture.md` is compared with the checkout:
  an entry naming a file or folder that does not exist, or a module the tree does not mention in
  a folder whose modules it spells out (`harness/`, `target_server/`), is a warning, so
  `mkdocs build --strict` fails until the page is updated.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
API_MARKER = "<!-- python-api -->"
TREE_MARKER = "<!-- layout-tree -->"
log = logging.getLogger("mkdocs.hooks.api_and_layout")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if API_MARKER in markdown:
        markdown = markdown.replace(API_MARKER, api_table())
    if TREE_MARKER in markdown:
        for problem in tree_problems(markdown):
            log.warning("%s: %s", page.file.src_uri, problem)
    return markdown


def api_table() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    harness = importlib.import_module("harness")
    names = getattr(harness, "__all__", None)
    if not names:
        return "*This checkout's `harness/__init__.py` does not define `__all__` yet.*\n"
    rows = ["| name | what | summary |", "|---|---|---|"]
    for name in names:
        try:
            obj = getattr(harness, name)
        except Exception as exc:  # an export that does not import is a broken API: say so loudly
            log.warning("harness.%s is in __all__ but cannot be imported: %s", name, exc)
            continue
        rows.append(f"| {cell(title(name, obj))} | {kind(obj)} | {cell(summary(obj))} |")
    return "\n".join(rows) + "\n"


def title(name: str, obj: Any) -> str:
    """`harness.name`, with the call signature (no annotations) for functions."""
    if inspect.isfunction(obj):
        try:
            params = [p.replace(annotation=inspect.Parameter.empty)
                      for p in inspect.signature(obj).parameters.values()]
            return f"`harness.{name}{inspect.Signature(params)}`"
        except (TypeError, ValueError):
            pass
    return f"`harness.{name}`"


def kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    return "function" if callable(obj) else "constant"


def summary(obj: Any) -> str:
    if not inspect.isclass(obj) and not callable(obj):
        if isinstance(obj, dict):
            return f"a mapping of {len(obj)}: " + ", ".join(f"`{k}`" for k in obj)
        text = repr(obj)
        return f"`{text}`" if len(text) <= 60 else f"a `{type(obj).__name__}`"
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    first = " ".join((doc or "").strip().split("\n\n")[0].split())
    if inspect.isclass(obj) and first.startswith(obj.__name__ + "("):
        return ""  # the dataclass's generated signature, not a description
    return first


def cell(text: str) -> str:
    return text.replace("|", r"\|")


def tree_entries(markdown: str) -> list[str]:
    """Paths named by the tree: two spaces of indent per level, folders end in /."""
    after = markdown.split(TREE_MARKER, 1)[1]
    match = re.search(r"```[a-z]*\n(.*?)```", after, re.S)
    if not match:
        return []
    stack: list[str] = []
    paths = []
    for line in match.group(1).splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        stack = stack[:depth]
        path = "".join(stack) + name
        paths.append(path)
        if name.endswith("/"):
            stack.append(name)
    return paths


def tree_problems(markdown: str) -> list[str]:
    listed = tree_entries(markdown)
    problems = [f"the tree lists {p}, which does not exist" for p in listed if not (ROOT / p).exists()]
    listed_set = {p.rstrip("/") for p in listed}
    listed_set |= {parent.as_posix() for p in listed for parent in Path(p.rstrip("/")).parents} - {"."}
    # a top folder with any entry listed below it must have every module listed
    detailed = sorted({p.split("/")[0] for p in listed if "/" in p.rstrip("/")})
    for top in detailed:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "__pycache__" in rel:
                continue
            if path.name == "__init__.py" and not path.read_text().strip():
                continue  # an empty package marker needs no line of its own
            if rel not in listed_set:
                problems.append(f"{rel} exists but the tree does not describe it")
            folder = path.parent.relative_to(ROOT).as_posix()
            if folder not in listed_set:
                listed_set.add(folder)  # report each missing folder once
                problems.append(f"{folder}/ exists but the tree does not describe it")
    return problems
