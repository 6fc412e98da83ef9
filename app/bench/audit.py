"""`python -m app bench --audit`: does `audit` find what was planted, and better than the peer's way?

- **Planted label noise.** A `--labels` CSV over Imagenette's own files (nothing copied) with 5 % of
  the training labels changed at random to another class (seeded; the changed files recorded). The
  final model is `train` on it, as a user runs it; then `audit RUN --time MINUTES`. Precision,
  recall and F1 of the training files it flags against the changed ones, and the same for the peer
  baseline: the final model's training-set losses (what `review --train` steps through), the same
  number of files flagged.
- **Planted leakage.** 20 training images copied into validation, resized and re-encoded, in a
  temporary dataset whose train/ and val/ are links to Imagenette's (nothing is written there):
  how many the audit finds, and how many other pairs it calls leakage.
- **Calibration.** The final model's validation logits: temperature fitted on one half, ECE before
  and after on the other half.
- **Grad-CAM against an independent fact.** A generated dataset whose class is the colour of a
  square at a random place on noise; after training, the share of validation images whose CAM peak
  lies inside the square (its box recorded when it was drawn).
Every timing beside the host's model-only training img/s (start and end) and what else was running."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.paths import PROJECT_ROOT
from .timing import command_line


def plant(src: Path, root: Path, noise: float = 0.05, copies: int = 20, seed: int = 0,
          per_class: int | None = None, val_per_class: int | None = None) -> dict:
    """A dataset at `root` reading `src`'s files through links (train/, val/), `copies` training images
    resized and re-encoded into copies/ as validation images, and labels.csv with `noise` of the
    training labels changed. Returns the CSV, the changed files and the planted pairs."""
    from PIL import Image

    from ..data.scan import scan

    ds = scan(src)
    rng = np.random.default_rng(seed)
    train, val = _pick(ds, "train", per_class, rng), _pick(ds, "val", val_per_class, rng)
    root.mkdir(parents=True)
    for d in ("train", "val"):
        os.symlink((src / d).resolve(), root / d, target_is_directory=True)
    rel = [it.path.relative_to(src).as_posix() for it in train]
    labels = [ds.classes[it.label] for it in train]
    changed = sorted(rng.choice(len(train), int(round(noise * len(train))), replace=False).tolist())
    for i in changed:
        labels[i] = ds.classes[(train[i].label + int(rng.integers(1, len(ds.classes)))) % len(ds.classes)]
    pairs = []
    (root / "copies").mkdir()
    for n, i in enumerate(rng.choice(len(train), copies, replace=False).tolist()):
        with Image.open(train[i].path) as im:
            scale = float(rng.uniform(0.6, 0.9))
            im = im.convert("RGB").resize((int(im.width * scale), int(im.height * scale)), Image.BICUBIC)
            name = f"copies/copy_{n:02d}.jpg"
            im.save(root / name, quality=int(rng.integers(60, 80)))
        pairs.append({"copy": name, "original": rel[i], "class": ds.classes[train[i].label]})
    rows = [(r, lab, 0) for r, lab in zip(rel, labels)]
    rows += [(it.path.relative_to(src).as_posix(), ds.classes[it.label], 1) for it in val]
    rows += [(p["copy"], p["class"], 1) for p in pairs]
    with open(root.parent / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("fname", "label", "is_valid"), *rows])
    return {"root": root, "labels": root.parent / "labels.csv", "changed": {rel[i] for i in changed},
            "pairs": pairs, "n_train": len(train), "n_val": len(val) + copies}


def _pick(ds, split: str, per_class: int | None, rng) -> list:
    items = ds.split(split)
    if not per_class:
        return items
    out = []
    for c in range(len(ds.classes)):
        pool = [it for it in items if it.label == c]
        out += [pool[i] for i in sorted(rng.choice(len(pool), min(per_class, len(pool)), replace=False))]
    return out


def user(args: list, tmp: Path, cache: str) -> tuple[float, subprocess.CompletedProcess]:
    """One command as a user runs it: a new process, the bench's private cache `cache` (a user's
    train and audit share one); (wall seconds, process)."""
    env = {**os.environ, "APP_CACHE_DIR": str(tmp / f"{cache}-cache"), "APP_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
    t = time.time()
    p = subprocess.run([sys.executable, "-m", "app", *map(str, args)], cwd=PROJECT_ROOT, env=env, capture_output=True,
                       text=True)
    if p.returncode:
        from ..core.errors import RunError

        last = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        kept = Path(tempfile.gettempdir()) / f"app-bench-audit-{args[0]}-failed.log"  # the whole story, kept
        kept.write_text(p.stdout + "\n" + p.stderr, encoding="utf-8")
        raise RunError(f"bench --audit: `{' '.join(map(str, args[:2]))}` failed (exit {p.returncode}): {last} "
                       f"(its output: {kept}; APP_DEBUG=1 puts the traceback there)")
    return time.time() - t, p


def prf(flagged: set, truth: set) -> dict:
    tp = len(flagged & truth)
    p = tp / len(flagged) if flagged else 0.0
    r = tp / len(truth) if truth else 0.0
    return {"flagged": len(flagged), "true_positives": tp, "precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def _rel(path: str, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def score_labels(audit: Path, final: Path, planted: dict) -> dict:
    """The audit's flagged training files and the peer baseline's (top training losses of the final
    model, as many) against the changed files."""
    from ..evaluation.findings import read_findings
    from ..evaluation.review import write_train_losses

    root = planted["root"].resolve()
    found = [f for f in read_findings(audit)["label_issue"] if f.split == "train"]
    flagged = {_rel(f.path, root) for f in found}
    losses = final / "top_losses_train.csv"
    if not losses.is_file():
        write_train_losses(final, losses)
    with open(losses, newline="", encoding="utf-8") as f:
        ranked = [_rel(r["path"], root) for r in sorted(csv.DictReader(f), key=lambda r: -float(r["loss"]))]
    audit_s, base_s = prf(flagged, planted["changed"]), prf(set(ranked[: len(flagged)]), planted["changed"])
    k = len(planted["changed"])  # what a person reviewing worst first meets in the first k
    audit_s["precision_at_k_changed"] = round(len({_rel(f.path, root) for f in found[:k]} & planted["changed"]) / k, 4)
    base_s["precision_at_k_changed"] = round(len(set(ranked[:k]) & planted["changed"]) / k, 4)
    out = {"changed": len(planted["changed"]), "training_images": planted["n_train"], "audit": audit_s,
           "baseline_top_losses": base_s, "validation_flags": sum(f.split == "val" for f in
                                                                   read_findings(audit)["label_issue"])}
    out["f1_ratio"] = round(audit_s["f1"] / base_s["f1"], 3) if base_s["f1"] else None
    out["targets"] = {"f1_at_least_0.6": audit_s["f1"] >= 0.6, "f1_at_least_1.3x_baseline": bool(
        out["f1_ratio"] and out["f1_ratio"] >= 1.3)}
    return out


def score_leakage(audit: Path, planted: dict) -> dict:
    """Planted copies found (paired with their own original), and the other pairs called leakage."""
    from ..evaluation.findings import read_findings

    root = planted["root"].resolve()
    truth = {p["copy"]: p["original"] for p in planted["pairs"]}
    leaks = read_findings(audit)["leakage"]
    got = {_rel(f.path, root): _rel(f.other, root) for f in leaks}
    found = [c for c, o in truth.items() if got.get(c) == o]
    false = [{"validation": v, "training": t} for v, t in got.items() if truth.get(v) != t]
    dups = read_findings(audit)["near_duplicate"]
    return {"planted": len(truth), "found": len(found), "false_pairs": len(false), "false_pair_list": false[:20],
            "near_duplicate_pairs_within_a_split": len(dups),
            "targets": {"all_found": len(found) == len(truth), "at_most_5_false_pairs": len(false) <= 5}}


def score_calibration(final: Path, planted: dict, seed: int = 0) -> dict:
    """The final model's validation logits (the planted copies left out): temperature fitted on one
    half, ECE (15 bins) before and after on the other half."""
    from ..audit.score import score, split_loader
    from ..evaluation.calibration import ece
    from ..model.bundle import calibrated, fit_temperature
    from ..model.learner import load_run

    learn, _, ds = load_run(final, log=lambda *_: None)
    s = score(learn, split_loader(learn, ds, "val"), features=False)
    keep = np.array(["/copies/" not in p for p in s.paths])
    z, y = s.logits[keep], s.targets[keep]
    order = np.random.default_rng(seed).permutation(len(y))
    fit, test = order[: len(y) // 2], order[len(y) // 2 :]
    t = fit_temperature(z[fit], y[fit])
    return {"images_fit": len(fit), "images_measured": len(test), "temperature": round(t, 4), "n_bins": 15,
            "ece_before": round(ece(calibrated(z[test], 1.0), y[test]), 4),
            "ece_after": round(ece(calibrated(z[test], t), y[test]), 4)}


SQUARE_COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}


def make_squares(root: Path, train: int = 300, val: int = 100, side: int = 224, seed: int = 0) -> dict:
    """RGB noise (grey, SD 45, with a random cast of one of the class colours, so the image's mean
    colour does not tell the class) and one square (a fifth to a quarter of the side) of the class's
    colour at a random place; returns {validation file: [top, left, bottom, right]} (bottom, right
    exclusive). 224 px: AlexNet's last convolution then sees 13 x 13 places (at 128 px, 7 x 7 whose
    receptive fields cover the whole image)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours, boxes = list(SQUARE_COLOURS.values()), {}
    for split, n in (("train", train), ("val", val)):
        for name, rgb in SQUARE_COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                cast = 0.3 * (np.array(colours[int(rng.integers(len(colours)))]) - 128)
                a = np.clip(rng.normal(128, 45, (side, side, 3)) + cast, 0, 255).astype(np.uint8)
                s = int(rng.integers(side // 5, side // 4 + 1))
                top, left = (int(v) for v in rng.integers(0, side - s + 1, 2))
                a[top : top + s, left : left + s] = np.clip(np.array(rgb) + rng.normal(0, 12, (s, s, 3)), 0, 255)
                f = d / f"{name}_{i:04d}.png"
                Image.fromarray(a).save(f)
                if split == "val":
                    boxes[str(f)] = [top, left, top + s, left + s]
    return boxes


def score_gradcam(tmp: Path, epochs: int = 8, seed: int = 0) -> dict:
    """Train on the squares, then: is each validation image's Grad-CAM peak (for its true class) inside
    its square?"""
    from ..core.files import read_json
    from ..model.cam import CamModel, peak

    boxes = make_squares(tmp / "squares", seed=seed + 1)  # seed 0's squares chose the CAM method (model/cam.py)
    run = tmp / "squares-run"
    wall, _ = user(["fit-one-cycle", "--data", tmp / "squares", "--size", 224, "--epochs", epochs, "--bs", 32,
                    "--out", run], tmp, "squares")
    cam = CamModel.from_run(run)
    files = sorted(boxes)
    inside = []
    for start in range(0, len(files), 32):
        part = files[start : start + 32]
        maps, _ = cam.heatmaps([cam.load(f) for f in part], [cam.classes.index(Path(f).parent.name) for f in part])
        for f, m in zip(part, maps):
            r, c = peak(m)
            top, left, bottom, right = boxes[f]
            inside.append(top <= r < bottom and left <= c < right)
    acc = read_json(run / "metrics.json")["accuracy"]
    share = float(np.mean(inside))
    from ..model.cam import CAM_METHOD

    return {"validation_images": len(files), "peak_inside_square": round(share, 4), "accuracy": acc, "cam": CAM_METHOD,
            "epochs": epochs, "train_s": round(wall, 1), "target_at_least_0.9": share >= 0.9}


def others() -> dict:
    """What else this host was running: load average and the busiest processes not of this bench."""
    import psutil

    me = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    procs = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if p.pid not in me:
                procs.append((p.cpu_percent(interval=None), p))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    time.sleep(1.0)
    busy = []
    for _, p in procs:
        try:
            cpu = p.cpu_percent(interval=None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cpu >= 20:
            busy.append({"cpu_percent": round(cpu), "command": " ".join(p.info["cmdline"] or [p.info["name"]])[:160]})
    return {"load_average_1_5_15": [round(x, 2) for x in psutil.getloadavg()], "busy_processes": busy}


def run_audit_bench(data=None, final_minutes: float = 15.0, audit_minutes: float = 30.0, folds: int = 4,
                    per_class: int | None = None, val_per_class: int | None = None, seed: int = 0, log=print,
                    device: str = "auto", json_path=None) -> dict:
    """All four measurements; the JSON is written after each (a failure keeps what came before)."""
    from ..core.device import pick_device
    from ..core.files import write_json
    from ..core.rundir import device_info, versions
    from ..data.download import resolve_data
    from .keep import model_only_img_s

    tmp = Path(tempfile.mkdtemp(prefix="app-audit-bench-"))
    src = resolve_data(str(data) if data else None)
    res = {"device": device_info(pick_device(device)), "versions": versions(), "command": command_line(),
           "data": str(src), "final_minutes": final_minutes, "audit_minutes": audit_minutes, "folds": folds,
           "host_model_only_img_s_128px": {"start": model_only_img_s(src, tmp / "probe0")}, "host_start": others()}
    save = (lambda: write_json(json_path, res)) if json_path else (lambda: None)
    log(f"audit bench on {res['device']}: model-only {res['host_model_only_img_s_128px']['start']:.0f} img/s at 128 px")
    try:
        planted = plant(src, tmp / "planted", seed=seed, per_class=per_class, val_per_class=val_per_class)
        final = tmp / "final"
        wall, _ = user(["train", "--data", planted["root"], "--labels", planted["labels"], "--time", final_minutes,
                        "--device", device, "--out", final], tmp, "user")
        res["final_model"] = _final_record(final, wall)
        log(f"  final model: {res['final_model']['accuracy'] * 100:.2f} % in {wall:.0f} s")
        wall, p = user(["audit", final, "--folds", folds, "--time", audit_minutes, "--device", device, "--out",
                        tmp / "audit"], tmp, "user")
        res["audit_run"] = {"wall_s": round(wall, 1), "budget_s": audit_minutes * 60,
                            "summary": json.loads((tmp / "audit" / "audit.json").read_text(encoding="utf-8"))}
        res["label_noise"] = score_labels(tmp / "audit", final, planted)
        res["leakage"] = score_leakage(tmp / "audit", planted)
        log(f"  audit in {wall:.0f} s: label F1 {res['label_noise']['audit']['f1']:.3f} (baseline "
            f"{res['label_noise']['baseline_top_losses']['f1']:.3f}); leakage {res['leakage']['found']}/20 found, "
            f"{res['leakage']['false_pairs']} false pair(s)")
        save()
        res["calibration"] = score_calibration(final, planted, seed)
        save()
        res["gradcam"] = score_gradcam(tmp, seed=seed)
        log(f"  calibration ECE {res['calibration']['ece_before']:.4f} -> {res['calibration']['ece_after']:.4f}; "
            f"Grad-CAM peak inside the square {res['gradcam']['peak_inside_square'] * 100:.1f} %")
    finally:
        res["host_model_only_img_s_128px"]["end"] = model_only_img_s(src, tmp / "probe1")
        res["host_end"] = others()
        save()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _final_record(run: Path, wall: float) -> dict:
    from ..core.files import read_json

    meta, m = read_json(run / "config.json"), read_json(run / "metrics.json")
    return {"accuracy": m["accuracy"], "n_val": m["n"], "wall_s": round(wall, 1), "epochs": meta["config"]["epochs"],
            "preset": meta["config"]["preset"], "plan": meta.get("plan", {}).get("summary")}
