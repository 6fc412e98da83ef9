"""`python -m app compare`: several runs' settings and metrics in one table (and JSON). `sha256` is
the start of the trained weights' SHA-256 (config.json `weights_sha256`): runs that show the same
one ended with the same weights, bit for bit (a replay with `train --config`), and a line says so."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import RunError
from ..core.files import check_writable, read_json, write_new
from ..core.rundir import load_config
from .report import _pct


def run_labels(runs: list[Path]) -> list[str]:
    """Each run as the fewest trailing parts of its path that tell it from the others ("fit0/run",
    "fit1/run"): a long absolute path in a 17-column table squeezed every column to 4 characters."""
    parts = [Path(r).resolve().parts for r in runs]
    distinct = len(set(parts))
    for n in range(1, max(map(len, parts)) + 1):
        labels = [str(Path(*p[-n:])) for p in parts]
        if len(set(labels)) == distinct:
            return labels
    return [str(r) for r in runs]


def _table(cols: list[str], rows: list[list[str]]):
    """17 columns in 160 (piped output's width): one space between columns, no empty TTA column, the
    run and the weights (which may be paths) folded, every other column whole and at least its
    header's width (rich had squeezed them all to 4: "accu-racy")."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    keep = [i for i, c in enumerate(cols) if c != "TTA acc" or any(r[i] for r in rows)]
    t = Table(title="runs", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
              collapse_padding=True)
    for i in keep:
        c = cols[i]
        t.add_column(c, justify="right" if i >= 4 and c != "loader" else "left",
                     **({"overflow": "fold", "min_width": 8} if c in ("run", "weights")
                        else {"min_width": len(c), "no_wrap": True}))
    for r in rows:
        t.add_row(*(Text(r[i]) for i in keep))  # paths and names as typed, not as rich markup
    return t


def compare_runs(runs: list[Path], console, json_path: Path | None = None) -> list[dict]:
    """One table of several runs' settings and metrics; with `json_path`, the rows as JSON too."""
    from rich.text import Text

    if json_path:  # before the work: never overwritten, and a folder it can be written in
        if os.path.lexists(json_path):
            raise RunError(f"{json_path} already exists; nothing was overwritten (choose another --json)")
        check_writable(json_path)
    cols = ["run", "command", "preset", "weights", "epochs", "size", "lr", "bs", "loader", "wall s", "fit s",
            "accuracy", "precision", "recall", "F1", "TTA acc", "sha256"]
    out, rows = [], []
    for r, label in zip(runs, run_labels(runs)):
        cfg, meta = load_config(r)
        if not (Path(r) / "metrics.json").is_file():
            raise RunError(f"{r} has no metrics.json (run `python -m app evaluate {r}` first)")
        m = read_json(Path(r) / "metrics.json")
        row = {"run": str(r), "device": meta.get("device"), "command": cfg.command, "preset": cfg.preset,
               "weights": cfg.weights, "epochs": cfg.epochs, "size": cfg.size, "progressive": cfg.progressive,
               "lr": cfg.lr, "bs": cfg.bs, "loader": cfg.loader, "wall_s": meta.get("wall_seconds"),
               "fit_s": meta.get("fit_seconds"), **{k: m[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro")},
               "tta_accuracy": m.get("tta", {}).get("accuracy"), "weights_sha256": meta.get("weights_sha256")}
        out.append(row)
        rows.append([label, cfg.command, cfg.preset, cfg.weights, str(cfg.epochs), str(cfg.size), f"{cfg.lr:g}",
                     str(cfg.bs), cfg.loader, str(row["wall_s"] or ""), str(row["fit_s"] or ""), _pct(row["accuracy"]),
                     _pct(row["precision_macro"]), _pct(row["recall_macro"]), _pct(row["f1_macro"]),
                     _pct(row["tta_accuracy"]) if row["tta_accuracy"] is not None else "", (row["weights_sha256"] or "")[:12]])
    console.print(_table(cols, rows))
    for label, typed in dict.fromkeys((row[0], str(r)) for row, r in zip(rows, runs)):
        if label != typed:  # the table's short name, and the run as typed
            console.print(Text(f"{label}: {typed}"))
    for digest in dict.fromkeys(r["weights_sha256"] for r in out if r["weights_sha256"]):
        same = [r["run"] for r in out if r["weights_sha256"] == digest]
        if len(same) > 1:
            console.print(Text(f"same trained weights, bit for bit (sha256 {digest[:12]}): {', '.join(same)}"))
    if json_path:
        body = json.dumps(out if len(out) > 1 else out[0], indent=2, default=str)
        write_new(json_path, lambda f: f.write(body))
    return out
