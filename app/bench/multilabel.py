"""`python -m app bench --multi-label MINUTES`: multi-label training, ours against fastai's default
multi-label recipe, each given MINUTES (issue 33).

The data is made here from real images: 2 x 1 collages of two Imagenette images of different
classes at 128 px (the two classes as labels), and some single images with their one label, in a
temporary folder with a `labels.csv` (`;` between labels); validation collages come from
Imagenette's own validation images only. Nothing is committed and nothing is written into
../shared. Both arms run as a user runs them (a new process, a cold cache, `--resize squish`, so a
collage is seen whole): ours is `train` (the CPU recipe, one threshold per label chosen on the
validation set); fastai's is `fit-one-cycle --preset fastai-default` (accuracy_multi, every label
at 0.5). The JSON records mAP (threshold-free) and macro F1 for both: ours at its thresholds,
fastai's at 0.5, as each recipe predicts."""

from __future__ import annotations

import csv
import random
import shutil
import tempfile
from pathlib import Path

from .budget import user_run
from .timing import command_line

SIDE = 128  # each half of a collage, px
ARMS = {"ours": ["train", "--weights", "none"], "fastai_default": ["fit-one-cycle", "--preset", "fastai-default"]}


def make_collages(src: Path, dst: Path, train: int = 3000, val: int = 900, singles: float = 0.25, seed: int = 0) -> Path:
    """dst/images/*.jpg and dst/labels.csv (fname,labels,is_valid): `train` + `val` collages of two
    images of different classes side by side, and `singles` as many single images (one label)."""
    from PIL import Image

    from ..data.scan import scan

    ds = scan(src, verify=False)
    rng = random.Random(seed)
    rows = []
    (dst / "images").mkdir(parents=True)
    for split, n in (("train", train), ("val", val)):
        by_class: dict[int, list[Path]] = {}
        for it in ds.split(split):
            by_class.setdefault(it.label, []).append(it.path)
        classes = sorted(by_class)
        for i in range(n + int(n * singles)):
            pair = rng.sample(classes, 1 if i >= n else 2)
            ims = [Image.open(rng.choice(by_class[c])).convert("RGB").resize((SIDE, SIDE)) for c in pair]
            out = Image.new("RGB", (SIDE * len(ims), SIDE))
            for k, im in enumerate(ims):
                out.paste(im, (k * SIDE, 0))
            name = f"images/{split}_{i:05d}.jpg"
            out.save(dst / name, quality=90)
            rows.append([name, ";".join(ds.classes[c] for c in pair), split == "val"])
    with open(dst / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["fname", "labels", "is_valid"])
        w.writerows(rows)
    return dst


def run_multilabel(data=None, minutes: float = 10.0, log=print, device: str = "auto") -> dict:
    import json

    from ..core.device import pick_device
    from ..core.rundir import device_info, versions
    from ..data.download import resolve_data
    from .keep import model_only_img_s

    tmp = Path(tempfile.mkdtemp(prefix="app-multilabel-"))
    try:
        src = resolve_data(str(data) if data else None)
        res = {"device": device_info(pick_device(device)), "versions": versions(), "command": command_line(),
               "budget_minutes": minutes, "source": str(src),
               "host_model_only_img_s_128px": model_only_img_s(src, tmp / "probe")}
        root = make_collages(src, tmp / "collages")
        res["data"] = {"train_rows": sum(1 for _ in (root / "images").glob("train_*")),
                       "val_rows": sum(1 for _ in (root / "images").glob("val_*")), "collage_px": [2 * SIDE, SIDE]}
        for arm, args in ARMS.items():
            run = tmp / arm
            r = user_run([*args, "--labels", str(root / "labels.csv"), "--resize", "squish"], root, minutes, run, device)
            m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
            f1 = m["f1_macro"] if arm == "ours" else m["f1_macro_at_0.5"]
            res[arm] = {**r, "map": m["map"], "f1_macro": f1, "f1_macro_tuned": m["f1_macro"],
                        "f1_macro_at_0.5": m["f1_macro_at_0.5"], "f1_micro": m["f1_micro"],
                        "hamming_loss": m["hamming_loss"], "exact_match": m["accuracy"],
                        "thresholds": m["thresholds"] if arm == "ours" else [0.5] * len(m["thresholds"])}
            log(f"  {arm}: macro F1 {f1 * 100:.2f} %, mAP {m['map'] * 100:.2f} %, {r['epochs']} epochs in "
                f"{r['wall_s']:.0f} s")
        res["gain_f1_points"] = round(100 * (res["ours"]["f1_macro"] - res["fastai_default"]["f1_macro"]), 2)
        res["gain_map_points"] = round(100 * (res["ours"]["map"] - res["fastai_default"]["map"]), 2)
        res["target_met"] = res["gain_f1_points"] >= 3.0
        log(f"  ours - fastai: {res['gain_f1_points']:+.2f} points macro F1 (target +3), "
            f"{res['gain_map_points']:+.2f} points mAP")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
