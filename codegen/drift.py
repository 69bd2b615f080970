"""`check`: regenerate into a temporary directory and compare with the committed tree."""

from __future__ import annotations

import difflib
import json
import tempfile
from pathlib import Path

from . import layout
from .generate import CACHE_DIRS, installed_tools, render


def _tree(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and not CACHE_DIRS & set(p.relative_to(root).parts)
    }


def missing_headers(root: Path) -> list[str]:
    return [
        rel
        for rel, path in _tree(root).items()
        if rel.endswith(".py") and not layout.HEADER_RE.match(path.read_text(encoding="utf-8").split("\n", 1)[0])
    ]


def tool_changes(committed: Path) -> list[str]:
    """One line per pinned generator or formatter whose version differs from the one `committed` was made with."""
    try:
        made_with = json.loads((committed / layout.STAMP).read_text(encoding="utf-8")).get("tools", {})
    except (OSError, ValueError):
        return []  # a missing or unreadable stamp shows up as a changed file
    return [
        f"TOOL {name}: generated/ was made with {made_with.get(name, '(none)')}, this environment has {have}"
        for name, have in installed_tools().items()
        if made_with.get(name) != have
    ]


def drift(committed: Path) -> list[str]:
    """Human-readable problems; empty when `committed` is exactly what the specs produce now."""
    problems = tool_changes(committed)
    problems += [f"MISSING HEADER {rel}" for rel in missing_headers(committed)] if committed.exists() else []
    with tempfile.TemporaryDirectory(prefix="llama-orch-check-") as tmp:
        fresh = render(Path(tmp))
        want, have = _tree(fresh), _tree(committed) if committed.exists() else {}
        for rel in sorted(want.keys() | have.keys()):
            if rel not in have:
                problems.append(f"MISSING {rel} (run `python xtask.py regen`)")
            elif rel not in want:
                problems.append(f"STALE {rel} (no longer generated)")
            elif have[rel].read_bytes() != want[rel].read_bytes():
                old, new = have[rel].read_text(encoding="utf-8"), want[rel].read_text(encoding="utf-8")
                diff = difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    f"generated/{layout.PACKAGE}/{rel} (committed)",
                    f"generated/{layout.PACKAGE}/{rel} (from specs)",
                )
                problems.append(f"CHANGED {rel}\n" + "".join(diff))
    return problems
