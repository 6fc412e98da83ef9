"""The audit from start to end (`run_audit`): open what is audited, check the folds fit, cleanvision,
the folds, one scoring pass, cleanlab and the near-duplicate check, Grad-CAM overlays, then the
folder's evaluation, audit.csv, audit.json and the report."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.files import write_json
from ..core.host import process_seconds
from ..core.rundir import new_run_dir, save_config, update_config
from ..evaluation.findings import AUDIT_JSON, Finding, write_findings
from . import find
from .audit import CAM_FILES, Source, budget_minutes, oos_probs, open_source, run_folds
from .folds import check_folds, make_folds


def run_audit(target, folds: int = 4, minutes: float | None = None, out=None, weights=None, preset: str = "auto",
              device: str = "auto", dataset: dict | None = None, console=None, progress=None,
              epochs: int | None = None) -> Path:
    """`python -m app audit RUN_OR_DATA`; returns the audit folder. The budget counts from here, on a
    clock of its own (a bench or a notebook may call it from a process that has run for hours)."""
    from ..core.host import own_clock

    with own_clock():
        return _run_audit(target, folds, minutes, out, weights, preset, device, dataset, console, progress, epochs)


def _run_audit(target, folds, minutes, out, weights, preset, device, dataset, console, progress, epochs) -> Path:
    log = (lambda m: console.print(m, markup=False, highlight=False)) if console else print
    budget = budget_minutes(minutes, device, epochs)
    src = open_source(Path(target), weights, preset, device, dataset, progress)
    if epochs:
        src.cfg = src.cfg.replace(epochs=epochs)
    check_folds(src.ds, folds)
    folder = _new_folder(src, out, folds, budget)
    t, times = time.time(), {}
    log(f"audit: {len(src.ds.split('train'))} training and {len(src.ds.split('val'))} validation images, "
        f"{folds} folds" + (f", --time {budget:g} min" if budget else ", the recipe's epochs per fold"))
    quality = _quality(src, log)
    times["cleanvision_s"] = time.time() - t
    fold_list = make_folds(src.ds, folds, src.cfg.seed, folder / "folds")
    t = time.time()
    records = run_folds(src, fold_list, budget, console, progress, log=log)
    times["folds_s"] = time.time() - t
    t = time.time()
    learn, val, train = _score(src, fold_list, device)
    oos, known = oos_probs(src, fold_list)
    findings, summary = _findings(src, val, train, oos, known, quality)
    _cams(learn, src.cfg, findings, folder)
    times["score_and_find_s"] = time.time() - t
    write_findings(folder, findings)
    write_json(folder / AUDIT_JSON, {**summary, "folds": {"k": folds, "runs": records}, "budget_minutes": budget,
                                    "seconds": {k: round(v, 1) for k, v in times.items()}, "notes": src.notes})
    _evaluate(learn, src, val, folder, log)
    update_config(folder, status="finished", wall_seconds=round(process_seconds(), 1))
    from ..evaluation.report import write_report

    write_report(folder)  # after the status: the page says finished
    log(f"audit: {summary['summary']}")
    log(f"audit.csv: {folder / 'audit.csv'}  report: {folder / 'report.html'}  review: python -m app review {folder} "
        "--audit")
    return folder


def _new_folder(src: Source, out, k: int, budget: float) -> Path:
    """The audit's run-like folder: config.json holds the dataset's settings, classes and folders
    (what `review --apply` needs) and says what was audited."""
    from ..core.device import pick_device
    from ..core.rundir import device_info, versions

    folder = new_run_dir("audit", str(out) if out else None)
    what = f"audit of {src.run}" if src.run else f"audit of the dataset {src.ds.root}"
    save_config(folder, src.cfg, command=f"{what} ({k}-fold cross-validation)", kind="audit", source_run=
                str(src.run.resolve()) if src.run else None, classes=list(src.ds.names), synsets=src.ds.classes,
                layout=src.ds.layout.spec() if src.ds.layout else {}, data_fingerprint=src.ds.fingerprint(),
                weights_reason=src.weights.reason, versions=versions(), device=device_info(pick_device(src.cfg.device,
                log=lambda *_: None)), folds=k, budget_minutes=budget, status="running")
    return folder


def _items(src: Source) -> list:
    return src.ds.split("train") + src.ds.split("val")


def _quality(src: Source, log) -> list[tuple[int, str, float]]:
    items = _items(src)
    found = find.low_quality([str(it.path) for it in items])
    log(f"cleanvision: {len(found)} low-quality flag(s) on {len(items)} images")
    return found


def _score(src: Source, fold_list: list, device: str):
    """(the learner that scores validation, validation as it sees it, training with features): the run's
    own model, or for a bare dataset the folds' models averaged (fold 1's body gives the features)."""
    from ..model.learner import load_run
    from ..model.weights import torch_load
    from .score import ensemble, score, split_loader

    if src.run is not None:
        learn, _, _ = load_run(src.run, device=device, log=lambda *_: None)
        val = score(learn, split_loader(learn, src.ds, "val"))
    else:
        learn = _learner(src, device)
        dl = split_loader(learn, src.ds, "val")
        states = [torch_load(f.run / "models" / "last.pth")["model"] for f in fold_list]
        val = ensemble(learn, dl, states)
        learn.model.load_state_dict(states[0])
        val.features = score(learn, dl).features
    return learn, val, score(learn, split_loader(learn, src.ds, "train"))


def _learner(src: Source, device: str):
    """A learner over the whole dataset at the recipe's final size (one decoded cache), no weights yet."""
    from ..core.device import pick_device
    from ..data.loaders import make_dls
    from ..model.learner import build
    from ..model.weights import Weights

    cfg = src.cfg.replace(progressive="", compile=False)
    dev = pick_device(device, log=lambda *_: None)
    _, dls = make_dls(cfg, cfg.size, dev, log=lambda *_: None, ds=src.ds)
    learn = build(cfg, dls, None, dev, log=lambda *_: None, weights=Weights("none"))
    learn.cur_size = cfg.size
    return learn


def _aligned(src: Source, s, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(dataset indices of a scored split's rows, their features) in the dataset's item order."""
    from .folds import _key

    items = src.ds.split(split)
    index = {_key(it.path, src.ds.root): i for i, it in enumerate(items)}
    rows = np.array([index[_key(Path(p), src.ds.root)] for p in s.paths])
    return rows, s.features


def _findings(src: Source, val, train, oos: np.ndarray, known: np.ndarray, quality: list) -> tuple[list, dict]:
    """Every finding, worst first within each kind, and audit.json's summary of them."""
    names, items = src.ds.names, _items(src)
    n_train = len(src.ds.split("train"))
    y = np.array([it.label for it in items])
    vrows, vfeat = _aligned(src, val, "val")
    trows, tfeat = _aligned(src, train, "train")
    feats = np.zeros((len(items), tfeat.shape[1]), np.float32)
    feats[trows], feats[n_train + vrows] = tfeat, vfeat
    has = np.zeros(len(items), bool)
    has[trows], has[n_train + vrows] = True, True
    probs = np.full((len(items), len(names)), 1.0 / len(names), np.float32)
    probs[:n_train], probs[n_train + vrows] = oos, val.probs
    labels = _label_findings(items, y, probs, names, {"train": np.flatnonzero(known),
                                                      "val": n_train + np.sort(vrows)})
    where = np.flatnonzero(has)  # the images the scoring pass read
    pairs = [(int(where[i]), int(where[j]), c) for i, j, c in find.near_duplicates(feats[where])]
    pairs, alike = find.same_picture(pairs, [str(it.path) for it in items])
    leaks, dups, leak_info = _pair_findings(items, y, names, pairs, probs, n_train)
    leak_info["look_alike_pairs"] = len(alike)  # close in features, different pictures: not listed
    low = [Finding("low_quality", items[i].split, str(items[i].path), names[y[i]], score=s, detail=c)
           for i, c, s in quality]
    summary = _summary(src, labels, leak_info, dups, low)
    return labels + leaks + dups + low, summary


def _label_findings(items, y, probs, names, rows_of: dict) -> list[Finding]:
    out = []
    for split, rows in rows_of.items():
        if len(rows) < 2 or len(set(y[rows].tolist())) < 2:
            continue
        flagged, quality = find.label_issues(y[rows], probs[rows])
        sug = find.suggested(probs[rows], y[rows])
        for k in flagged:
            i = rows[k]
            out.append(Finding("label_issue", split, str(items[i].path), names[y[i]], names[sug[k]], float(quality[k]),
                               detail=f"{probs[i, sug[k]]:.3f}"))
    return sorted(out, key=lambda f: f.score)


def _pair_findings(items, y, names, pairs, probs, n_train: int):
    """(leakage: each validation image with its most similar training copy; near duplicates inside a
    split; what the report says: how many leaked, validation accuracy with and without them)."""
    leaks: dict[int, tuple[int, float, int]] = {}
    dups = []
    for i, j, c in pairs:
        a, b = items[i].split, items[j].split
        if a != b:
            v, t = (j, i) if a == "train" else (i, j)
            best = leaks.get(v)
            leaks[v] = (t, c, 1 + (best[2] if best else 0)) if not best or c > best[1] else (*best[:2], best[2] + 1)
        else:
            dups.append(Finding("near_duplicate", a, str(items[i].path), names[y[i]], score=c, other=str(items[j].path),
                                other_split=b, detail=names[y[j]]))
    rows = [Finding("leakage", "val", str(items[v].path), names[y[v]], score=c, other=str(items[t].path),
                    other_split="train", detail=f"{n} training cop{'y' if n == 1 else 'ies'}; training label "
                                                f"{names[y[t]]}") for v, (t, c, n) in leaks.items()]
    val_idx = np.arange(n_train, len(items))
    right = probs[val_idx].argmax(1) == y[val_idx]
    clean = np.array([v not in leaks for v in val_idx], bool)
    info = {"n_leaked": len(leaks), "accuracy_all": float(right.mean()) if len(right) else None,
            "accuracy_without_leaked": float(right[clean].mean()) if clean.any() else None}
    return sorted(rows, key=lambda f: -f.score), dups, info


def _summary(src: Source, labels, leak: dict, dups, low) -> dict:
    by = {s: sum(f.split == s for f in labels) for s in ("train", "val")}
    acc, acc2 = leak["accuracy_all"], leak["accuracy_without_leaked"]
    leak["note"] = (f"validation accuracy {100 * acc:.2f} % on all {len(src.ds.split('val'))} images, "
                    f"{100 * acc2:.2f} % without the {leak['n_leaked']} with a near copy in training"
                    if acc is not None and acc2 is not None else "")
    leak["how"] = (f"pooled features of the model body (512 numbers), cosine nearest neighbours; a pair is a near "
                   f"copy when its distance is below {find.NEAR_DUPLICATE} x the median nearest-neighbour distance "
                   f"(cleanlab Datalab's rule) and its perceptual hashes (phash, 64 bits) differ in at most "
                   f"{find.PHASH_MAX_BITS} bits; {leak['look_alike_pairs']} pair(s) close in features only were left out")
    return {
        "summary": f"{len(labels)} label issue(s) ({by['train']} training, {by['val']} validation), {leak['n_leaked']} "
                   f"leaked validation image(s), {len(dups)} near-duplicate pair(s) within a split, {len(low)} "
                   "low-quality flag(s)",
        "labels": {"n": len(labels), **by, "filter_by": find.FILTER_BY,
                   "how": "cleanlab find_label_issues (filter_by " + find.FILTER_BY + ") on out-of-sample "
                          "probabilities: training images from the fold that held each out, validation images from "
                          + ("the run's model" if src.run else "the folds' models averaged")
                          + "; label quality is cleanlab's self-confidence (lower is worse)"},
        "leakage": leak, "near_duplicates": {"pairs": len(dups)},
        "quality": {"flags": len(low), "checks": list(find.QUALITY_CHECKS),
                    "how": "cleanvision " + ", ".join(find.QUALITY_CHECKS) + " (low_information: near-blank)"},
    }


def _cams(learn, cfg, findings: list[Finding], folder: Path) -> None:
    """Grad-CAM overlays of the worst label issues (for the suggested class) and of the leaked
    validation images (for their label), as JPEGs in cam/, named in audit.csv."""
    from PIL import Image

    from ..data.images import BadImage
    from ..model.cam import CamModel, grad_cam_available

    todo = [f for f in findings if f.kind == "label_issue"][:CAM_FILES] + \
        [f for f in findings if f.kind == "leakage"][: CAM_FILES // 4]
    if not todo or not grad_cam_available():
        return
    cam = CamModel.from_learner(learn, cfg.size, cfg.resize)
    arrays, kept = [], []
    for f in todo:
        try:
            arrays.append(cam.load(f.path))
            kept.append(f)
        except BadImage:
            continue
    targets = [cam.classes.index(f.suggested if f.kind == "label_issue" else f.given) for f in kept]
    (folder / "cam").mkdir(exist_ok=True)
    for n, (f, (overlay, _, _)) in enumerate(zip(kept, cam.overlays(arrays, targets))):
        f.cam = f"cam/{n:04d}.jpg"
        Image.fromarray(overlay).save(folder / f.cam, quality=88)


def _evaluate(learn, src: Source, val, folder: Path, log) -> None:
    """The folder's own evaluation of the validation predictions (metrics, calibration, top losses,
    every figure, the audit's included)."""
    import torch

    from ..evaluation.evaluate import Interp, evaluate_learner
    from .score import split_loader

    logits, targs = torch.from_numpy(val.logits), torch.from_numpy(val.targets)
    with learn.loss_not_reduced():
        losses = learn.loss_func(logits, targs).float()
    dl = split_loader(learn, src.ds, "val")
    interp = Interp(learn, dl, torch.softmax(logits.float(), 1), targs, losses, logits)
    evaluate_learner(learn, folder, src.cfg, log=log, ds=src.ds, interp=interp)
