"""`check`: regenerate into a temporary directory and compare with the committed tree."""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from . import layout
from .generate import CACHE_DIRS, render


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


def drift(committed: Path) -> list[str]:
    """Human-readable problems; empty when `committed` is exactly what the specs produce now."""
    problems = [f"MISSING HEADER {rel}" for rel in missing_headers(committed)] if committed.exists() else []
    with tempfile.TemporaryDirectory(prefix="llama-orch-check-") as tmp:
        fresh = render(Path(tmp))
        want, have = _tree(fresh), _tree(committed) if committed.exists() else {}
        for rel in sorted(want.keys() | have.keys()):
            if rel not in have:
                problems.append(f"MISSING {rel} (run `python xtask.py regen`)")
            elif rel not in want:
                problems.append(f"STALE {rel} (no longer generated)")
            else:
                old, new = have[rel].read_text(encoding="utf-8"), want[rel].read_text(encoding="utf-8")
                if old != new:
                    diff = difflib.unified_diff(
                        old.splitlines(keepends=True),
                        new.splitlines(keepends=True),
                        f"generated/{layout.PACKAGE}/{rel} (committed)",
                        f"generated/{layout.PACKAGE}/{rel} (from specs)",
                    )
                    problems.append(f"CHANGED {rel}\n" + "".join(diff))
    return problems
