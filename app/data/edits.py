"""Changes to a dataset decided in `review`: decisions.csv (append-only, last row per file wins),
and `--apply` / `--undo`, which move relabelled files to their new class folder and removed ones to
ROOT/quarantine/<time>/. Nothing is deleted or overwritten (a taken name gets a free one, found by
the move itself), nothing is written outside the dataset root, and every move is journalled before
it happens (data/journal.py), so `--undo` puts everything back after a crash at any point."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError, RunError
from ..core.files import write_json
from ..core.rundir import load_config
from .journal import JOURNAL, Journal, free_name, journal_moves, move_no_replace, put_back, read_journal
from .layout import detect

DECISIONS = "decisions.csv"


FIELDS = ["path", "decision", "new_class", "actual", "predicted", "loss", "time"]


KINDS = ("keep", "relabel", "remove")


QUARANTINE = "quarantine"


MANIFEST = "manifest.json"


class Decisions:
    """The decisions CSV: append-only on disk, last row per path wins (`latest` in the order of
    each path's last row)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.latest: dict[str, dict] = {}
        if self.path.is_file():
            with open(self.path, newline="") as f:
                for r in csv.DictReader(f):
                    self.latest.pop(r["path"], None)
                    self.latest[r["path"]] = r

    def record(self, e, decision: str, new_class: str = "") -> dict:
        assert decision in KINDS
        row = {"path": e.path, "decision": decision, "new_class": new_class, "actual": e.actual,
               "predicted": e.predicted, "loss": f"{e.loss:.4f}", "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
            f.flush()
        self.latest.pop(e.path, None)
        self.latest[e.path] = row
        return row

    def get(self, path: str) -> dict | None:
        return self.latest.get(path)


def _inside(root: Path, p: Path) -> bool:
    try:
        p.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def plan_moves(run: Path, stamp: str) -> tuple[Path, list[dict], list[tuple[str, str]]]:
    """(dataset root, moves to make, problems skipped) for the decisions of `run`; removed files
    go to ROOT/quarantine/<stamp>/. Two files bound for one name get different names."""
    run = Path(run)
    cfg, meta = load_config(run)
    root = Path(cfg.data)
    lay = detect(root, cfg.labels or None, cfg.valid_pct, cfg.split_seed)  # where a relabelled file goes
    if not (run / DECISIONS).is_file():
        raise RunError(f"{run} has no {DECISIONS}: review it first (python -m app review {run})")
    classes = meta.get("classes", [])
    folder_of = dict(zip(classes, meta.get("synsets") or classes))
    moves, problems, taken = [], [], set()
    for path, r in _one_per_file(Decisions(run / DECISIONS).latest, problems):
        if r["decision"] == "keep":
            continue
        dest = _destination(lay, Path(path), r, folder_of, stamp)
        if isinstance(dest, str):
            problems.append((path, dest))
            continue
        dest = free_name(dest, taken)
        taken.add(str(dest))
        moves.append({"kind": r["decision"], "from": str(Path(path).resolve()), "to": str(dest.resolve()),
                      "new_class": r["new_class"]})
    return root, moves, problems


def _one_per_file(latest: dict[str, dict], problems: list) -> list[tuple[str, dict]]:
    """One decision per file however its path is spelt (`f`, `./f`, `a/../f`): the last row wins and
    the other spellings are listed."""
    by_file: dict[str, tuple[str, dict]] = {}
    for path, r in latest.items():
        key = os.path.realpath(path)
        if key in by_file:
            problems.append((by_file[key][0], f"listed twice (also as {path}); the later decision is used"))
        by_file[key] = (path, r)
    return list(by_file.values())


def _destination(lay, p: Path, r: dict, folder_of: dict, stamp: str) -> Path | str:
    """Where a relabelled or removed file goes (its layout says), or why it cannot move (a string)."""
    root = lay.root
    if r["decision"] not in KINDS:
        return f"unknown decision {r['decision']!r}"
    if not _inside(root, p) or p.is_symlink():
        return "outside the dataset root (refused)"
    if not p.is_file():
        return "no longer present"
    rel = p.resolve().relative_to(root.resolve())
    if rel.parts[0] == QUARANTINE:
        return "already in quarantine"
    if r["decision"] == "remove":
        dest = root / QUARANTINE / stamp / rel
    else:
        folder = folder_of.get(r["new_class"])
        if folder is None or "/" in folder or folder in ("..", "."):
            return f"unknown class {r['new_class']!r}"
        dest = lay.relabel_target(p, folder)
        if isinstance(dest, str):
            return dest
        if dest.parent.resolve() == p.parent.resolve():
            return f"already in {folder}/"
    if not _inside(root, dest):
        return "destination outside the dataset root (refused)"
    return dest


def quarantine_dir(root: Path) -> Path:
    """ROOT/quarantine, refused when it is a symlink or a file (nothing is written outside the root)."""
    q = Path(root) / QUARANTINE
    if q.is_symlink():
        raise DataError(f"{q} is a symlink; review writes only inside the dataset root (make it a real folder)")
    if q.exists() and not q.is_dir():
        raise DataError(f"{q} is not a folder; move it away to apply or undo review decisions")
    return q


def _new_apply_dir(q: Path, stamp: str) -> Path:
    """quarantine/<stamp>/, or <stamp>_2, _3, ...: made exclusively, so two applies never share one."""
    q.mkdir(exist_ok=True)
    n = 1
    while True:
        d = q / (stamp if n == 1 else f"{stamp}_{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            n += 1


def apply_decisions(run: Path, console, assume_yes: bool = False) -> Path | None:
    from rich.prompt import Confirm

    stamp = time.strftime("%Y%m%d-%H%M%S")
    root, moves, problems = plan_moves(run, stamp)
    for path, why in problems:
        console.print(f"skipped {path}: {why}", soft_wrap=True, markup=False)
    if not moves:
        console.print("nothing to apply")
        return None
    q = quarantine_dir(root)
    _refuse_interrupted(q, run)
    _show_plan(console, root, moves)
    if not assume_yes and not Confirm.ask("apply these moves?", default=False, console=console):
        console.print("nothing was changed")
        return None
    if not _writable(root):
        raise DataError(f"{root} is read-only; copy the dataset somewhere writable and review that copy")
    qdir = _new_apply_dir(q, stamp)
    planned = (root / QUARANTINE / stamp).resolve()
    for m in moves:  # removals go to the folder this apply got
        if m["kind"] == "remove":
            m["to"] = str(qdir.resolve() / Path(m["to"]).relative_to(planned))
    done = _run_moves(qdir, run, root, moves)
    mf = qdir / MANIFEST
    write_json(mf, {"run": str(Path(run).resolve()), "root": str(root.resolve()), "created": stamp, "moves": done,
                    "undone": False})
    console.print(f"moved {len(done)} file(s); manifest {mf}; undo with: python -m app review {run} --undo",
                  markup=False)
    return mf


def _show_plan(console, root: Path, moves: list[dict]) -> None:
    from rich.table import Table
    from rich.text import Text

    base = root.resolve()
    t = Table(title=Text(f"{len(moves)} move(s) in {root}"), title_justify="left")
    for col in ("action", "from", "to"):
        t.add_column(col)
    for m in moves:
        t.add_row(Text(m["kind"] + (f" -> {m['new_class']}" if m["new_class"] else "")),
                  Text(str(Path(m["from"]).relative_to(base))), Text(str(Path(m["to"]).relative_to(base))))
    console.print(t)


def _run_moves(qdir: Path, run: Path, root: Path, moves: list[dict]) -> list[dict]:
    """Every move, its intent journalled (and fsynced) first; a destination found taken by the
    move itself is journalled again under a free name."""
    done = []
    with Journal(qdir / JOURNAL) as j:
        j.write(op="begin", run=str(Path(run).resolve()), root=str(root.resolve()), moves=len(moves))
        for i, m in enumerate(moves):
            dest = Path(m["to"])
            while True:
                j.write(op="intent", i=i, **{**m, "to": str(dest)})
                try:
                    move_no_replace(Path(m["from"]), dest)
                    break
                except FileExistsError:
                    dest = free_name(dest)
                except FileNotFoundError:  # gone since the plan: nothing moved
                    j.write(op="gone", i=i)
                    dest = None
                    break
            if dest is not None:
                j.write(op="done", i=i)
                done.append({**m, "to": str(dest)})
        j.write(op="end")
    return done


def _writable(root: Path) -> bool:
    return os.access(root, os.W_OK) and all(os.access(d, os.W_OK) for d in root.iterdir() if d.is_dir())


@dataclass
class Applied:
    """One apply's folder: its moves and whether they were put back."""

    folder: Path
    moves: list[dict]
    undone: bool
    finished: bool


def _order(folder: Path) -> tuple[str, int]:
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", folder.name)
    return m[1], int(m[2] or 1)


def applied(q: Path) -> list[Applied]:
    """Every apply recorded under quarantine/, oldest first: from its journal, or (applies of
    earlier versions) its manifest."""
    out = []
    folders = [p for p in q.iterdir() if p.is_dir() and not p.is_symlink()] if q.is_dir() else []
    for d in sorted(folders, key=_order):
        if (d / JOURNAL).is_file():
            recs = read_journal(d / JOURNAL)
            gone = {r["i"] for r in recs if r.get("op") == "gone"}
            moves = [m for i, m in enumerate(journal_moves(recs)) if i not in gone]
            ops = {r.get("op") for r in recs}
            out.append(Applied(d, moves, "undone" in ops, "end" in ops))
        elif (d / MANIFEST).is_file():
            try:
                m = json.loads((d / MANIFEST).read_text())
                out.append(Applied(d, list(m["moves"]), bool(m.get("undone")), True))
            except (ValueError, KeyError, TypeError, OSError) as e:
                raise DataError(f"cannot read {d / MANIFEST} ({type(e).__name__}: {e}); it has no journal to "
                                "recover from: move that folder away to undo the others") from None
    return out


def _refuse_interrupted(q: Path, run: Path) -> None:
    for a in applied(q):
        if not a.finished and not a.undone:
            raise DataError(f"an earlier --apply was interrupted ({a.folder}); put it back first with: "
                            f"python -m app review {run} --undo")


def undo_apply(run: Path, console, assume_yes: bool = False) -> Path | None:
    """Put back what the last apply not yet undone moved, whatever point it (or an earlier undo)
    was killed at."""
    from rich.prompt import Confirm

    cfg, _ = load_config(Path(run))
    root = Path(cfg.data)
    live = [a for a in applied(quarantine_dir(root)) if not a.undone]
    if not live:
        console.print("nothing to undo")
        return None
    a = live[-1]
    console.print(f"undo {len(a.moves)} move(s) from {a.folder}", markup=False)
    if not assume_yes and not Confirm.ask("move them back?", default=False, console=console):
        console.print("nothing was changed")
        return None
    back = 0
    for m in reversed(a.moves):
        src, dst = Path(m["to"]), Path(m["from"])
        what = put_back(src, dst) if _inside(root, src) and _inside(root, dst) else "outside"
        back += what == "back"
        why = {"outside": "outside the dataset root (refused)", "missing": "no longer present",
               "exists": f"{dst} exists again (left as it is)"}.get(what)
        if why:
            console.print(f"skipped {src}: {why}", soft_wrap=True, markup=False)
    _mark_undone(a)
    console.print(f"moved {back} file(s) back")
    return a.folder / MANIFEST


def _mark_undone(a: Applied) -> None:
    if (a.folder / JOURNAL).is_file():
        with Journal(a.folder / JOURNAL) as j:
            j.write(op="undone")
    try:
        manifest = json.loads((a.folder / MANIFEST).read_text())
    except (OSError, ValueError):  # never written (a kill) or cut short: the journal had the moves
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    write_json(a.folder / MANIFEST, {**manifest, "moves": a.moves, "undone": True})
