"""Changes to a dataset decided in `review`: decisions.csv (append-only, last row per file wins),
and `--apply` / `--undo`, which move relabelled files to their new class folder and removed ones to
ROOT/quarantine/<time>/, with a manifest. Nothing is deleted, nothing is written outside the
dataset root."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

from rich.markup import escape

from ..core.errors import DataError, RunError
from ..core.files import write_json
from ..core.rundir import load_config
from .layout import detect

DECISIONS = "decisions.csv"


FIELDS = ["path", "decision", "new_class", "actual", "predicted", "loss", "time"]


KINDS = ("keep", "relabel", "remove")


class Decisions:
    """The decisions CSV: append-only on disk, last row per path wins."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.latest: dict[str, dict] = {}
        if self.path.is_file():
            with open(self.path, newline="") as f:
                for r in csv.DictReader(f):
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
    go to ROOT/quarantine/<stamp>/."""
    run = Path(run)
    cfg, meta = load_config(run)
    root = Path(cfg.data)
    lay = detect(root, cfg.labels or None, cfg.valid_pct, cfg.split_seed)
    if not (run / DECISIONS).is_file():
        raise RunError(f"{run} has no {DECISIONS}: review it first (python -m app review {run})")
    classes = meta.get("classes", [])
    folder_of = dict(zip(classes, meta.get("synsets") or classes))
    moves, problems = [], []
    for path, r in Decisions(run / DECISIONS).latest.items():
        if r["decision"] == "keep":
            continue
        dest = _destination(lay, Path(path), r, folder_of, stamp)
        if isinstance(dest, str):
            problems.append((path, dest))
        else:
            moves.append({"kind": r["decision"], "from": str(Path(path).resolve()), "to": str(dest.resolve()),
                          "new_class": r["new_class"]})
    return root, moves, problems


def _destination(lay, p: Path, r: dict, folder_of: dict, stamp: str) -> Path | str:
    """Where a relabelled or removed file goes, or why it cannot move (a string)."""
    root = lay.root
    if r["decision"] not in KINDS:
        return f"unknown decision {r['decision']!r}"
    if not _inside(root, p) or p.is_symlink():
        return "outside the dataset root (refused)"
    if not p.is_file():
        return "no longer present"
    rel = p.resolve().relative_to(root.resolve())
    if r["decision"] == "remove":
        dest = root / "quarantine" / stamp / rel
    else:
        folder = folder_of.get(r["new_class"])
        if folder is None or "/" in folder or folder in ("..", "."):
            return f"unknown class {r['new_class']!r}"
        dest = lay.relabel_target(p, folder)
        if isinstance(dest, str):
            return dest
    if not _inside(root, dest):
        return "destination outside the dataset root (refused)"
    if dest.exists():
        return f"destination exists: {dest}"
    return dest


def apply_decisions(run: Path, console, assume_yes: bool = False) -> Path | None:
    from rich.prompt import Confirm
    from rich.table import Table

    stamp = time.strftime("%Y%m%d-%H%M%S")
    root, moves, problems = plan_moves(run, stamp)
    for path, why in problems:
        console.print(f"[yellow]skipped[/] {escape(str(path))}: {escape(str(why))}", soft_wrap=True)
    if not moves:
        console.print("nothing to apply")
        return None
    t = Table(title=f"{len(moves)} move(s) in {root}", title_justify="left")
    t.add_column("action")
    t.add_column("from")
    t.add_column("to")
    for m in moves:
        t.add_row(m["kind"] + (f" -> {m['new_class']}" if m["new_class"] else ""),
                  str(Path(m["from"]).relative_to(root.resolve())), str(Path(m["to"]).relative_to(root.resolve())))
    console.print(t)
    if not assume_yes and not Confirm.ask("apply these moves?", default=False, console=console):
        console.print("nothing was changed")
        return None
    if not _writable(root):
        raise DataError(f"{root} is read-only; copy the dataset somewhere writable and review that copy")
    qdir = root / "quarantine" / stamp
    qdir.mkdir(parents=True, exist_ok=True)
    manifest = {"run": str(Path(run).resolve()), "root": str(root.resolve()), "created": stamp, "moves": [], "undone": False}
    mf = qdir / "manifest.json"
    for m in moves:
        Path(m["to"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(m["from"], m["to"])
        manifest["moves"].append(m)
        write_json(mf, manifest)  # after every move: a crash leaves an exact record
    console.print(f"moved {len(moves)} file(s); manifest {mf}; undo with: python -m app review {run} --undo", markup=False)
    return mf


def _writable(root: Path) -> bool:
    import os

    return os.access(root, os.W_OK) and all(os.access(d, os.W_OK) for d in root.iterdir() if d.is_dir())


def undo_apply(run: Path, console, assume_yes: bool = False) -> Path | None:
    from rich.prompt import Confirm

    cfg, _ = load_config(Path(run))
    root = Path(cfg.data)
    manifests = sorted((root / "quarantine").glob("*/manifest.json"))
    live = [m for m in manifests if not json.loads(m.read_text()).get("undone")]
    if not live:
        console.print("nothing to undo")
        return None
    mf = live[-1]
    manifest = json.loads(mf.read_text())
    moves = manifest["moves"]
    console.print(f"undo {len(moves)} move(s) from {mf}")
    if not assume_yes and not Confirm.ask("move them back?", default=False, console=console):
        console.print("nothing was changed")
        return None
    back = 0
    for m in reversed(moves):
        src, dst = Path(m["to"]), Path(m["from"])
        if not (_inside(root, src) and _inside(root, dst)):
            console.print(f"[yellow]skipped[/] {src}: outside the dataset root (refused)")
        elif not src.exists():
            console.print(f"[yellow]skipped[/] {src}: no longer present")
        elif dst.exists():
            console.print(f"[yellow]skipped[/] {src}: {dst} exists again")
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            back += 1
    manifest["undone"] = True
    write_json(mf, manifest)
    console.print(f"moved {back} file(s) back")
    return mf
