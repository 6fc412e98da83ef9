"""Short probes of candidate source recipes for `bench --transfer` (issue 25).

Each candidate trains AlexNet from random init on the source dataset (Tiny ImageNet, 200 classes,
64 px) for the same fixed number of epochs, each in its own process (the app's own training, as the
bench builds its source), validating every epoch; its top-1 per epoch, its fit time and the host's
model-only img/s go to benchmarks/runs/transfer-source-probes.json (merged with what is there).

  python benchmarks/transfer_source_probes.py --epochs 5 [--only NAME ...] [--bench-json BENCH.json ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "runs" / "transfer-source-probes.json"
BASE = dict(preset="cpu-quick", size=64, progressive="", bs=64, lr=1e-3, min_scale=0.6)
CANDIDATES = {  # what each changes from BASE (cpu-quick at 64 px: the 15.6 % probe of the issue)
    "base-lr1e-3": {},
    "lr2e-3": dict(lr=2e-3),
    "lr4e-3": dict(lr=4e-3),
    "crop1.0": dict(min_scale=1.0),  # no random crop (flips and 5-degree rotations only)
    "crop0.35": dict(min_scale=0.35),
    "lr2e-3-bs128": dict(lr=2e-3, bs=128),
}


def one(name: str, epochs: int, data: str, out: str) -> dict:
    """One candidate in this process: trained, scored on the source's validation images."""
    from rich.console import Console

    from app.training.after_fit import Finish
    from app.training.presets import resolve
    from app.training.train import train

    recipe = {**BASE, **CANDIDATES[name]}
    cfg = resolve("fit-one-cycle", weights="none", data=data, epochs=epochs, valid_every=1, **recipe)
    run = train(cfg, out=out, finish=Finish(figures=False), console=Console(quiet=True))
    meta = json.loads((run / "config.json").read_text())
    with open(run / "history.csv") as f:
        hist = [float(r["accuracy"]) for r in csv.DictReader(f) if r["accuracy"]]
    return {"name": name, "recipe": recipe, "epochs": epochs, "accuracy": hist[-1], "accuracy_per_epoch": hist,
            "fit_s": meta["fit_seconds"], "wall_s": meta["wall_seconds"],
            "train_img_s": round(epochs * len(_train_items(data)) / meta["fit_seconds"], 1)}


def _train_items(data: str) -> list:
    from app.data.scan import scan

    return scan(data).split("train")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tiny-imagenet-200-64"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--only", nargs="*", default=list(CANDIDATES))
    p.add_argument("--bench-json", nargs="*", default=[], help="`python -m app bench --json` files of this host")
    p.add_argument("--work", default="/tmp/transfer-source-probes")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a.one, a.epochs, a.data, a.out)))
        return
    res = json.loads(OUT.read_text()) if OUT.is_file() else {"probes": {}}
    res["bench_ceiling_img_s_128px"] = res.get("bench_ceiling_img_s_128px", []) + [
        round(json.loads(Path(b).read_text())["ceiling_train_img_s"], 1) for b in a.bench_json]
    res["data"], res["note"] = a.data, __doc__.strip().splitlines()[0]
    for name in a.only:
        out = Path(a.work) / f"{name}-e{a.epochs}-{int(time.time())}"
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work shares the cores
        t = time.time()
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--epochs", str(a.epochs), "--data", a.data,
                               "--out", str(out)], capture_output=True, text=True, env={**os.environ, "APP_PROGRESS": "0"})
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = {**json.loads(line[0][7:]), "process_s": round(time.time() - t, 1), "load_1min_before": load}
        res["probes"][f"{name}-e{a.epochs}"] = r
        OUT.write_text(json.dumps(res, indent=1) + "\n")
        print(f"{name}: {r['accuracy'] * 100:.2f} % after {a.epochs} epochs ({r['fit_s']:.0f} s fitting, "
              f"{r['train_img_s']:.0f} img/s)", flush=True)


if __name__ == "__main__":
    main()
