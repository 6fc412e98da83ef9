"""The README's first command, as a newcomer runs it: a fresh clone of this checkout's HEAD beside
../shared, cold caches (a new, empty XDG_CACHE_HOME: no decoded cache, no scan verdicts), the
command copied from README.md's first lines, timed from outside. Writes benchmarks/main-job-cpu.json
with the run's plan, phases before the first batch, precision choice, epochs and accuracy, beside the
host's model-only img/s measured right after (`bench --keep`'s probe).

    .venv/bin/python benchmarks/main_job_fresh_clone.py [--json benchmarks/main-job-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def readme_command() -> str:
    lines = (HERE / "README.md").read_text(encoding="utf-8").splitlines()
    return lines[lines.index(next(ln for ln in lines if ln.startswith("# 1. "))) + 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=str(HERE / "benchmarks" / "main-job-cpu.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="main-job-"))  # the cold caches, the probe
    clone = HERE.parent / f"main-job-clone-{os.getpid()}"  # beside the checkout: its ../shared is ours
    try:
        subprocess.run(["git", "clone", "-q", str(HERE), str(clone)], check=True)
        cmd = readme_command()
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PIP_CACHE_DIR": str(Path.home() / ".cache/pip")}
        env.pop("APP_CACHE_DIR", None)
        t0 = time.time()
        p = subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True, text=True)
        total = time.time() - t0
        if p.returncode:
            sys.exit(f"the README command failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
        run = next(ln.split("run: ", 1)[1].strip() for ln in p.stdout.splitlines() if ln.startswith("run: "))
        run = clone / run if not Path(run).is_absolute() else Path(run)
        meta = json.loads((run / "config.json").read_text(encoding="utf-8"))
        m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        from app.bench.keep import model_only_img_s  # the host, measured right after, with the same probe

        ceiling = model_only_img_s(Path(meta["config"]["data"]), work / "probe")
        res = {
            "what": "the README's first command from a fresh clone, cold caches (a new, empty XDG_CACHE_HOME)",
            "command": cmd, "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True,
                                                     text=True).stdout.strip(),
            "host_model_only_img_s_128px": round(ceiling, 1), "device": meta.get("device"),
            "total_s": round(total, 1), "wall_seconds_recorded": meta.get("wall_seconds"),
            "fit_seconds": meta.get("fit_seconds"), "budget_minutes": meta["config"].get("time"),
            "phases": meta.get("phases"), "precision": meta["config"].get("precision"),
            "precision_choice": meta.get("precision_choice"), "plan": meta.get("plan"),
            "epochs": meta["config"].get("epochs"), "preset": meta["config"].get("preset"),
            "weights": meta.get("weights_used"), "peak_rss_mb": meta.get("peak_rss_mb"),
            "accuracy": m["accuracy"], "precision_macro": m["precision_macro"], "recall_macro": m["recall_macro"],
            "f1_macro": m["f1_macro"], "n": m["n"], "calibration": m.get("calibration"),
            "stdout_tail": p.stdout.strip().splitlines()[-12:],
        }
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(f"{100 * m['accuracy']:.2f} % in {total:.0f} s ({meta['config'].get('epochs')} epochs, "
              f"{meta['config'].get('precision')}); host {ceiling:.0f} img/s; wrote {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
