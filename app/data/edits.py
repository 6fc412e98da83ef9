"""Changes to a dataset decided in `review`: decisions.csv (append-only, last row per file wins),
and `--apply` / `--undo`, which move relabelled files to their new class folder and removed ones to
ROOT/quarantine/<time>/; in the CSV layout a relabel changes the file's row and a removal also
deletes it, the labels file rewritten whole (a new file renamed over the old one). Nothing is
deleted or overwritten (a taken name gets a free one, found by the move itself), nothing is written
outside the dataset root but its labels file, and every change is journalled before it happens
(data/journal.py), so `--undo` puts everything back after a crash at any point. A dataset that
moved is followed with `--data` (and `--labels`): recorded paths are re-based onto it."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError, RunError
from ..core.files import write_json
from ..core.rundir import load_config
from .journal import JOURNAL, Journal, free_name, journal_moves, move_no_replace, put_back, read_journal
from .layout import detect, follow_moved, reading_of

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
            with open(self.path, newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    self.latest.pop(r["path"], None)
                    self.latest[r["path"]] = r

    def record(self, e, decision: str, new_class: str = "") -> dict:
        assert decision in KINDS
        row = {"path": e.path, "decision": decision, "new_class": new_class, "actual": e.actual,
               "predicted": e.predicted, "loss": f"{e.loss:.4f}", "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        new = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
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


def dataset_of(run: Path, data=None, labels=None):
    """(the run's settings with its dataset where it is now, the root the run recorded)."""
    cfg, _ = load_config(Path(run))
    moved = follow_moved(cfg, data, labels)
    if not Path(moved.data).is_dir():
        raise DataError(f"the run's data folder is gone: {moved.data} (moved? pass --data NEW_PATH)")
    return moved, Path(cfg.data)


def rebase(path: str | Path, old: Path, new: Path) -> Path:
    """`path` recorded under the dataset's old root, under its new one (unchanged when not under the old)."""
    try:
        return Path(new) / Path(path).relative_to(old)
    except ValueError:
        return Path(path)


def plan_moves(run: Path, stamp: str, data=None, labels=None) -> tuple[Path, list[dict], list[tuple[str, str]], object]:
    """(dataset root, moves to make, problems skipped, its Layout) for the decisions of `run`; removed files
    go to ROOT/quarantine/<stamp>/; a relabel in the CSV layout is a row edit ("to" None). Two files
    bound for one name get different names."""
    run = Path(run)
    cfg, old_root = dataset_of(run, data, labels)
    _, meta = load_config(run)
    root = Path(cfg.data)
    lay = detect(root, **reading_of(cfg))  # where a relabelled file goes
    if not (run / DECISIONS).is_file():
        raise RunError(f"{run} has no {DECISIONS}: review it first (python -m app review {run})")
    classes = meta.get("classes", [])
    folder_of = dict(zip(classes, meta.get("synsets") or classes))
    moves, problems, taken = [], [], set()
    for path, r in _one_per_file(Decisions(run / DECISIONS).latest, problems):
        if r["decision"] == "keep":
            continue
        dest = _destination(lay, rebase(path, old_root, root), r, folder_of, stamp)
        if isinstance(dest, str):
            problems.append((path, dest))
            continue
        if dest is not None:
            dest = free_name(dest, taken)
            taken.add(str(dest))
        moves.append({"kind": r["decision"], "from": str(rebase(path, old_root, root).resolve()),
                      "to": str(dest.resolve()) if dest is not None else None, "new_class": r["new_class"],
                      "label": _row_label(lay, r["new_class"], folder_of) if lay.kind == "csv" else None})
    return root, moves, problems, lay


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


def new_labels(cell: str, folder_of: dict) -> list[str] | str:
    """A multi-label decision's new set (names, `;` between) as the CSV's label keys, or why not."""
    names = [n for n in (cell or "").split(";") if n]
    unknown = [n for n in names if n not in folder_of]
    return f"unknown label(s) {', '.join(map(repr, unknown))}" if unknown else [folder_of[n] for n in names]


def _row_label(lay, cell: str, folder_of: dict) -> str | None:
    """The label cell a relabel writes into the CSV: the class key, or a multi-label set joined by
    the file's own delimiter."""
    if lay.multi:
        return lay.delim.join(new_labels(cell, folder_of))
    return folder_of.get(cell)


def _destination(lay, p: Path, r: dict, folder_of: dict, stamp: str) -> Path | None | str:
    """Where a relabelled or removed file goes (its layout says; None: it stays, its CSV row changes),
    or why it cannot (a string)."""
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
    elif lay.multi:  # a new label set: the row changes
        keys = new_labels(r["new_class"], folder_of)
        if isinstance(keys, str):
            return keys
        current = {Path(f).as_posix(): lab for f, lab, _ in lay.rows}.get(rel.as_posix())
        return "already has these labels" if current is not None and set(current) == set(keys) else None
    else:
        folder = folder_of.get(r["new_class"])
        if folder is None or "/" in folder or folder in ("..", "."):
            return f"unknown class {r['new_class']!r}"
        dest = lay.relabel_target(p, folder)
        if dest is None:  # the CSV layout: the row changes
            current = {Path(f).as_posix(): lab for f, lab, _ in lay.rows}.get(rel.as_posix())
            return f"already labelled {folder}" if current == folder else None
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


def apply_decisions(run: Path, console, assume_yes: bool = False, data=None, labels=None) -> Path | None:
    from rich.prompt import Confirm

    stamp = time.strftime("%Y%m%d-%H%M%S")
    root, moves, problems, lay = plan_moves(run, stamp, data, labels)
    for path, why in problems:
        console.print(f"skipped {path}: {why}", soft_wrap=True, markup=False)
    if not moves:
        console.print("nothing to apply")
        return None
    q = quarantine_dir(root)
    _refuse_interrupted(q, run)
    _show_plan(console, root, moves, lay)
    if not assume_yes and not Confirm.ask("apply these moves?", default=False, console=console):
        console.print("nothing was changed")
        return None
    if not _writable(root) or (lay.labels and not os.access(Path(lay.labels).parent, os.W_OK)):
        raise DataError(f"{root} is read-only; copy the dataset somewhere writable and review that copy")
    qdir = _new_apply_dir(q, stamp)
    planned = (root / QUARANTINE / stamp).resolve()
    for m in moves:  # removals go to the folder this apply got
        if m["kind"] == "remove":
            m["to"] = str(qdir.resolve() / Path(m["to"]).relative_to(planned))
    done, rows = _run_moves(qdir, run, root, moves, lay.labels)
    mf = qdir / MANIFEST
    write_json(mf, {"run": str(Path(run).resolve()), "root": str(root.resolve()), "created": stamp, "moves": done,
                    "labels": lay.labels, "label_edits": rows, "undone": False})
    said = f"; {len(rows)} row(s) of {lay.labels} edited" if lay.labels else ""
    console.print(f"moved {sum(m['to'] is not None for m in done)} file(s){said}; manifest {mf}; undo with: "
                  f"python -m app review {run} --undo", markup=False)
    return mf


def _show_plan(console, root: Path, moves: list[dict], lay) -> None:
    from rich.table import Table
    from rich.text import Text

    base = root.resolve()
    t = Table(title=Text(f"{len(moves)} change(s) in {root}"), title_justify="left")
    for col in ("action", "from", "to"):
        t.add_column(col)
    for m in moves:
        to = str(Path(m["to"]).relative_to(base)) if m["to"] else f"its row in {Path(lay.labels).name}"
        if m["kind"] == "remove" and lay.labels:
            to += f" (its row in {Path(lay.labels).name} deleted)"
        t.add_row(Text(m["kind"] + (f" -> {m['new_class']}" if m["new_class"] else "")),
                  Text(str(Path(m["from"]).relative_to(base))), Text(to))
    console.print(t)


def _run_moves(qdir: Path, run: Path, root: Path, moves: list[dict], labels: str = "") -> tuple[list[dict], list]:
    """The labels file's edits (journalled, then one atomic rewrite: a kill before it leaves the old
    file, whose rows then name files still in place), then every move, its intent journalled (and
    fsynced) first; a destination found taken by the move itself is journalled again under a free name."""
    from .labels_csv import edit_labels

    done, rows = [], []
    with Journal(qdir / JOURNAL) as j:
        j.write(op="begin", run=str(Path(run).resolve()), root=str(root.resolve()), moves=len(moves), labels=labels)
        if labels:
            edits = [{"file": m["from"], "new": m["label"] if m["kind"] == "relabel" else None} for m in moves]
            rows = edit_labels(Path(labels), root, edits, before=lambda r: j.write(op="labels-intent", rows=r))
            j.write(op="labels-done")
        for i, m in enumerate(moves):
            if m["to"] is None:
                done.append(m)
                continue
            dest = _move_one(j, i, m)
            if dest is not None:
                j.write(op="done", i=i)
                done.append({**m, "to": str(dest)})
        j.write(op="end")
    return done, rows


def _move_one(j: Journal, i: int, m: dict) -> Path | None:
    dest = Path(m["to"])
    while True:
        j.write(op="intent", i=i, **{**m, "to": str(dest)})
        try:
            move_no_replace(Path(m["from"]), dest)
            return dest
        except FileExistsError:
            dest = free_name(dest)
        except FileNotFoundError:  # gone since the plan: nothing moved
            j.write(op="gone", i=i)
            return None


def _writable(root: Path) -> bool:
    return os.access(root, os.W_OK) and all(os.access(d, os.W_OK) for d in root.iterdir() if d.is_dir())


@dataclass
class Applied:
    """One apply's folder: its moves and row edits, the root they were recorded under, whether they
    were put back."""

    folder: Path
    moves: list[dict]
    undone: bool
    finished: bool
    root: str = ""
    labels: str = ""
    rows: list[dict] = field(default_factory=list)

    def moved_to(self, root: Path, labels=None) -> Applied:
        """The same apply with its paths re-based onto the dataset's root now (and labels file)."""
        old = Path(self.root or root)
        moves = [{**m, "from": str(rebase(m["from"], old, root)),
                  "to": m["to"] and str(rebase(m["to"], old, root))} for m in self.moves]
        rows = [{**r, "file": str(rebase(r["file"], old, root))} for r in self.rows]
        where = str(labels) if labels else (self.labels and str(rebase(self.labels, old, root)))
        return Applied(self.folder, moves, self.undone, self.finished, str(root), where, rows)


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
            out.append(_from_journal(d, read_journal(d / JOURNAL)))
        elif (d / MANIFEST).is_file():
            try:
                m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
                out.append(Applied(d, list(m["moves"]), bool(m.get("undone")), True, m.get("root", ""),
                                   m.get("labels", ""), list(m.get("label_edits", []))))
            except (ValueError, KeyError, TypeError, OSError) as e:
                raise DataError(f"cannot read {d / MANIFEST} ({type(e).__name__}: {e}); it has no journal to "
                                "recover from: move that folder away to undo the others") from None
    return out


def _from_journal(d: Path, recs: list[dict]) -> Applied:
    gone = {r["i"] for r in recs if r.get("op") == "gone"}
    moves = [m for i, m in enumerate(journal_moves(recs)) if i not in gone]
    ops = {r.get("op") for r in recs}
    begin = next((r for r in recs if r.get("op") == "begin"), {})
    rows = next((r["rows"] for r in recs if r.get("op") == "labels-intent"), [])
    return Applied(d, moves, "undone" in ops, "end" in ops, begin.get("root", ""), begin.get("labels", ""), rows)


def _refuse_interrupted(q: Path, run: Path) -> None:
    for a in applied(q):
        if not a.finished and not a.undone:
            raise DataError(f"an earlier --apply was interrupted ({a.folder}); put it back first with: "
                            f"python -m app review {run} --undo")


def undo_apply(run: Path, console, assume_yes: bool = False, data=None, labels=None) -> Path | None:
    """Put back what the last apply not yet undone moved and edited, whatever point it (or an earlier
    undo) was killed at; `data`/`labels`: the dataset where it is now, if it moved."""
    from rich.prompt import Confirm

    cfg, _ = dataset_of(Path(run), data, labels)
    root = Path(cfg.data)
    live = [a.moved_to(root, labels) for a in applied(quarantine_dir(root)) if not a.undone]
    if not live:
        console.print("nothing to undo")
        return None
    a = live[-1]
    said = f" and {len(a.rows)} row edit(s) of {a.labels}" if a.rows else ""
    console.print(f"undo {sum(m['to'] is not None for m in a.moves)} move(s){said} from {a.folder}", markup=False)
    if not assume_yes and not Confirm.ask("put them back?", default=False, console=console):
        console.print("nothing was changed")
        return None
    back = _moves_back(a, root, console)
    rows = _rows_back(a, root, console)
    _mark_undone(a)
    console.print(f"moved {back} file(s) back" + (f"; {rows} row(s) of {a.labels} restored" if a.rows else ""),
                  markup=False)
    return a.folder / MANIFEST


def _moves_back(a: Applied, root: Path, console) -> int:
    back = 0
    for m in reversed([m for m in a.moves if m["to"] is not None]):
        src, dst = Path(m["to"]), Path(m["from"])
        what = put_back(src, dst) if _inside(root, src) and _inside(root, dst) else "outside"
        back += what == "back"
        why = {"outside": "outside the dataset root (refused)", "missing": "no longer present",
               "exists": f"{dst} exists again (left as it is)"}.get(what)
        if why:
            console.print(f"skipped {src}: {why}", soft_wrap=True, markup=False)
    return back


def _rows_back(a: Applied, root: Path, console) -> int:
    """The labels file's rows as they were (after the files are back: a restored row names a file in place)."""
    from .labels_csv import revert_labels

    if not a.rows:
        return 0
    if not Path(a.labels).is_file():
        console.print(f"skipped the row edits: {a.labels} not found (pass --labels FILE)", soft_wrap=True,
                      markup=False)
        return 0
    return revert_labels(Path(a.labels), root, a.rows)


def _mark_undone(a: Applied) -> None:
    if (a.folder / JOURNAL).is_file():
        with Journal(a.folder / JOURNAL) as j:
            j.write(op="undone")
    try:
        manifest = json.loads((a.folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # never written (a kill) or cut short: the journal had the moves
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    write_json(a.folder / MANIFEST, {**manifest, "moves": a.moves, "undone": True})
