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


def compare_runs(runs: list[Path], console, json_path: Path | None = None) -> list[dict]:
    """One table of several runs' settings and metrics; with `json_path`, the rows as JSON too."""
    from rich.table import Table
    from rich.text import Text

    if json_path:  # before the work: never overwritten, and a folder it can be written in
        if os.path.lexists(json_path):
            raise RunError(f"{json_path} already exists; nothing was overwritten (choose another --json)")
        check_writable(json_path)
    t = Table(title="runs", title_justify="left")
    cols = ["run", "command", "preset", "weights", "epochs", "size", "lr", "bs", "loader", "wall s", "fit s",
            "accuracy", "precision", "recall", "F1", "TTA acc", "sha256"]
    for i, c in enumerate(cols):
        t.add_column(c, justify="right" if i >= 4 and c != "loader" else "left")
    out = []
    for r in runs:
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
        cells = [str(r), cfg.command, cfg.preset, cfg.weights, str(cfg.epochs), str(cfg.size), f"{cfg.lr:g}",
                 str(cfg.bs), cfg.loader, str(row["wall_s"] or ""), str(row["fit_s"] or ""), _pct(row["accuracy"]),
                 _pct(row["precision_macro"]), _pct(row["recall_macro"]), _pct(row["f1_macro"]),
                 _pct(row["tta_accuracy"]) if row["tta_accuracy"] is not None else "", (row["weights_sha256"] or "")[:12]]
        t.add_row(*map(Text, cells))  # paths and names as typed, not as rich markup
    console.print(t)
    for digest in dict.fromkeys(r["weights_sha256"] for r in out if r["weights_sha256"]):
        same = [r["run"] for r in out if r["weights_sha256"] == digest]
        if len(same) > 1:
            console.print(Text(f"same trained weights, bit for bit (sha256 {digest[:12]}): {', '.join(same)}"))
    if json_path:
        body = json.dumps(out if len(out) > 1 else out[0], indent=2, default=str)
        write_new(json_path, lambda f: f.write(body))
    return out
