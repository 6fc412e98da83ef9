"""Moving files inside a dataset so that nothing is overwritten and a crash at any point can be
undone. Each move's intent is appended to a journal and fsynced before the move; the move itself
refuses an existing destination (a hard link, which fails on an existing name, then the unlink of
the old name); undo reads where every file is from the journal and the disk, so it finishes after
a kill anywhere, its own included.

On a file system without hard links (FAT, some network shares) the move is a rename after a check
of the destination: atomic, but a file created at that name in the instant between the two would
be replaced (Windows' rename refuses it itself)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import DataError

JOURNAL = "journal.jsonl"


def move_no_replace(src: Path, dst: Path) -> None:
    """Move `src` to `dst`; FileExistsError when `dst` exists (checked by the move, not before)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system
        if os.path.lexists(dst):
            raise FileExistsError(dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def free_name(dst: Path, taken: set[str] = frozenset()) -> Path:
    """`dst`, else NAME-2.EXT, NAME-3.EXT, ...: the first name neither on disk nor in `taken`."""
    n, cand = 1, dst
    while os.path.lexists(cand) or str(cand) in taken:
        n += 1
        cand = dst.with_name(f"{dst.stem}-{n}{dst.suffix}")
    return cand


class Journal:
    """Append-only JSON lines, each flushed and fsynced before the caller goes on."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, **rec) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def read_journal(path: Path) -> list[dict]:
    """The journal's records; a last line cut short by a kill is ignored (its move had not begun:
    the intent is on disk before the move), a damaged line before it is one error."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                break
            raise DataError(f"{path} is damaged at line {i + 1}; its moves cannot be trusted") from None
    return out


def journal_moves(records: list[dict]) -> list[dict]:
    """Each move's last intent (a move whose destination was taken is journalled again under its
    new name), in order."""
    moves: dict[int, dict] = {}
    for r in records:
        if r.get("op") == "intent":
            moves[r["i"]] = {k: r[k] for k in ("kind", "from", "to", "new_class")}
    return [moves[i] for i in sorted(moves)]


def put_back(src: Path, dst: Path) -> str:
    """Undo one move (file now at `src`, once at `dst`) whatever point a crash stopped it at; says what
    happened: 'back', 'already back', 'missing' or 'exists' (`dst` holds another file: untouched)."""
    here, there = os.path.lexists(src), os.path.lexists(dst)
    if here and there:
        if os.path.samefile(src, dst):  # killed between the link and the unlink: one file, two names
            os.unlink(src)
            return "back"
        return "exists"
    if not here:
        return "already back" if there else "missing"
    try:
        move_no_replace(src, dst)
    except FileExistsError:
        return "exists"
    return "back"
