"""fp32 against bf16 on the CPU, the two measurements that decide `--precision auto` (issue 24).

`bench --bf16`: speed, in interleaved rounds on one class-balanced subset: the model alone
(synthetic batches, same model, loss, optimizer and channels_last) and end to end (fastai fit on
the cached loader, loading and augmentation included), each under torch.autocast("cpu",
bfloat16) for bf16 (the CpuBf16 callback training uses). Round 0 is a warm-up for both (oneDNN
builds its bf16 kernels there) and is reported but not counted. Both learners are the main job's
recipe (cpu-quick: its augmentation, head and loss), so end to end times the loader the main job
trains with; the milliseconds each batch transform costs are measured beside them.

`bench --bf16-accuracy`: accuracy at equal epochs: the cpu-quick recipe from random init on a
class-balanced training subset, scored on every validation image, once per seed and precision
(pairs with the same seed see the same data order), fp32 and bf16 interleaved.

The rule (core/device.py AUTO_CPU_BF16): bf16 becomes `auto` on CPUs with native bf16 only if end
to end it is >= 1.25x and its accuracy is within 0.5 points.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from .timing import ceiling, command_line, need_two_batches, private_cache, train_speed, transform_ms

PRECISIONS = ("fp32", "bf16")


SPEEDUP_NEEDED, POINTS_ALLOWED = 1.25, 0.5
LOADER_TARGET = 0.85  # end to end over model-only at 128 px: the loader keeps up with the model


def run_bf16_speed(data, size: int, bs: int, images: int, log, repeats: int) -> dict:
    """Model-only and end-to-end img/s of fp32 and bf16 on the CPU, `repeats` counted rounds."""
    tmp = Path(tempfile.mkdtemp(prefix="app-bench-bf16-"))
    private_cache(tmp)
    try:
        learners, res = _speed_learners(data, size, bs, images, tmp)
        log(f"bf16 bench on {res['device']} ({res['cpu_bf16']}): {res['train_images']} images, {size}px, bs {bs}")
        rounds = {p: {"model_img_s": [], "e2e_img_s": [], "loader_share": []} for p in PRECISIONS}
        for r in range(repeats + 1):
            for p in PRECISIONS:
                rounds[p]["model_img_s"].append(round(ceiling(learners[p], size, bs, learners[p].dls.device,
                                                              steps=20, precision=p), 1))
                e2e = train_speed(learners[p])
                rounds[p]["e2e_img_s"].append(round(e2e["train_img_s"], 1))
                rounds[p]["loader_share"].append(round(e2e["loader_share"], 3))
            log(f"  round {r}{' (warm-up, not counted)' if r == 0 else ''}: " + ", ".join(
                f"{p} model {rounds[p]['model_img_s'][-1]:.0f} / end to end {rounds[p]['e2e_img_s'][-1]:.0f} img/s "
                f"(loader {100 * rounds[p]['loader_share'][-1]:.0f} % of it)"
                for p in PRECISIONS))
        res.update(_speed_summary(rounds))
        res["loader_ms_per_batch"] = {"recipe": transform_ms(learners["bf16"].dls.train),
                                      "fastai_default_augmentation": transform_ms(_default_aug_dl(learners["bf16"].dls, size, bs))}
        for k, v in res["loader_ms_per_batch"].items():
            log(f"  loader ({k.replace('_', ' ')}), ms per batch of {bs}: " + ", ".join(f"{t} {ms:.1f}" for t, ms in v.items()))
        log(f"  bf16 / fp32 (medians of rounds 1..{repeats}): model {res['model_ratio']:.2f}x, end to end "
            f"{res['e2e_ratio']:.2f}x (needs {SPEEDUP_NEEDED}x: {'met' if res['e2e_meets_rule'] else 'not met'}); end to "
            f"end / model-only, median of the rounds' own ratios: fp32 {res['fp32_e2e_over_model']:.2f}x, bf16 "
            f"{res['bf16_e2e_over_model']:.2f}x (target {LOADER_TARGET}x); the loader's share of end-to-end "
            f"seconds, inside each fit: fp32 {100 * res['fp32_loader_share_median']:.1f} %, bf16 "
            f"{100 * res['bf16_loader_share_median']:.1f} %")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _speed_learners(data, size: int, bs: int, images: int, tmp: Path):
    """One fp32 and one bf16 Learner on the same cached subset, built as training builds them."""
    import torch

    from ..core.config import check_sizes
    from ..core.device import cpu_bf16, seed_everything
    from ..core.rundir import device_info, versions
    from ..data.cache import open_or_build, stored_size
    from ..data.download import resolve_data
    from ..data.loaders import cached_dls
    from ..data.scan import scan
    from ..data.subset import make_subset
    from ..model.learner import build

    cfg = recipe_cfg(size, bs)
    check_sizes(cfg)
    device = torch.device("cpu")
    seed_everything(0, device)
    src = resolve_data(str(data) if data else None)
    k = len(scan(src).classes)
    ds = scan(make_subset(src, tmp / "data", max(1, images // k), max(1, bs // k)))
    dls = cached_dls(open_or_build(ds, stored_size(size), log=lambda *_: None), cfg, size, device)
    need_two_batches(dls.train, images, len(ds.split("train")), bs)
    quiet = lambda *a, **kw: None  # noqa: E731
    learners = {p: build(cfg.replace(precision=p), dls, Path(tempfile.mkdtemp(dir=tmp)), device, quiet)
                for p in PRECISIONS}
    res = {"device": device_info(device), "cpu_bf16": cpu_bf16(), "size": size, "bs": bs, "recipe": RECIPE,
           "recipe_settings": {k: getattr(cfg, k) for k in RECIPE_KEYS},
           "train_images": len(ds.split("train")), "torch_threads": torch.get_num_threads(),
           "versions": versions(), "command": command_line()}
    return learners, res


RECIPE = "cpu-quick"  # the main job's recipe on a CPU from random init
RECIPE_KEYS = ("min_scale", "max_rotate", "max_warp", "max_lighting", "label_smoothing", "head_dropout", "loader")


def recipe_cfg(size: int, bs: int):
    """The main job's recipe at one size: its augmentation, head and loss (not fastai's default warp
    and lighting, which it does not use and whose cost the JSON gives beside it)."""
    from ..core.config import TrainConfig
    from ..training.presets import PRESETS

    return TrainConfig(size=size, bs=bs, **{k: PRESETS[RECIPE][k] for k in RECIPE_KEYS})


def _default_aug_dl(dls, size: int, bs: int):
    """The same cached rows under fastai's default aug_transforms (warp 0.2, lighting 0.2, rotate 10)."""
    from ..core.config import TrainConfig
    from ..data.loaders import cached_dls

    return cached_dls(dls.cache, TrainConfig(size=size, bs=bs), size, dls.device).train


def _speed_summary(rounds: dict) -> dict:
    """Medians and ranges over the counted rounds (1..), and the ratios the rule reads."""
    out = {"rounds": len(rounds["fp32"]["model_img_s"]) - 1, "per_round": rounds, "warmup_round": 0}
    for p in PRECISIONS:
        for k, v in rounds[p].items():
            kept = v[1:] or v
            out[f"{p}_{k}_median"] = round(statistics.median(kept), 3 if k == "loader_share" else 1)
            out[f"{p}_{k}_range"] = [min(kept), max(kept)]
    for p in PRECISIONS:  # issue 29: the loader keeps up when end to end is >= LOADER_TARGET x model-only
        paired = [round(e / m, 3) for m, e in zip(rounds[p]["model_img_s"][1:], rounds[p]["e2e_img_s"][1:])]
        out[f"{p}_e2e_over_model_per_round"] = paired  # each round's two readings are seconds apart
        out[f"{p}_e2e_over_model"] = round(statistics.median(paired), 3)
        out[f"{p}_e2e_over_model_of_medians"] = round(out[f"{p}_e2e_img_s_median"] / out[f"{p}_model_img_s_median"], 3)
        out[f"{p}_loader_keeps_up"] = out[f"{p}_e2e_over_model"] >= LOADER_TARGET
    out["model_ratio"] = round(out["bf16_model_img_s_median"] / out["fp32_model_img_s_median"], 3)
    out["e2e_ratio"] = round(out["bf16_e2e_img_s_median"] / out["fp32_e2e_img_s_median"], 3)
    out["e2e_meets_rule"] = out["e2e_ratio"] >= SPEEDUP_NEEDED
    out["host_model_only_fp32_img_s"] = out["fp32_model_img_s_median"]
    return out


def run_bf16_accuracy(data, size: int, images: int, epochs: int, seeds: int, log) -> dict:
    """Accuracy of fp32 and bf16 at equal epochs, `seeds` seeds (1..seeds), on every validation image."""
    from ..core.device import cpu_bf16
    from ..core.errors import UsageError
    from ..core.rundir import device_info, versions
    from ..data.download import resolve_data
    from ..data.scan import scan
    from ..data.subset import make_subset
    from ..training.presets import PRESETS

    tmp = Path(tempfile.mkdtemp(prefix="app-bench-bf16acc-"))
    private_cache(tmp)
    try:
        src = resolve_data(str(data) if data else None)
        sub = make_subset(src, tmp / "data", max(1, images // len(scan(src).classes)), -1)
        ds = scan(sub)
        if len(ds.split("train")) < PRESETS["cpu-quick"]["bs"]:
            raise UsageError(f"--images {images} gives {len(ds.split('train'))} training images, not one batch of "
                             f"{PRESETS['cpu-quick']['bs']}: pass more")
        log(f"bf16 accuracy: {len(ds.split('train'))} training / {len(ds.split('val'))} validation images, "
            f"{epochs} epochs of cpu-quick at {size}px, seeds 1..{seeds}")
        runs = [_accuracy_run(sub, size, epochs, seed, p, tmp / f"{p}-{seed}", log)
                for seed in range(1, seeds + 1) for p in PRECISIONS]
        res = {"device": device_info("cpu"), "cpu_bf16": cpu_bf16(), "size": size, "epochs": epochs,
               "train_images": len(ds.split("train")), "val_images": len(ds.split("val")), "runs": runs,
               "versions": versions(), "command": command_line()}
        res.update(_accuracy_summary(runs))
        log(f"  bf16 - fp32: {res['mean_diff_points']:+.2f} points (per seed {res['diff_points']}); within "
            f"{POINTS_ALLOWED}: {res['within_rule']}")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _accuracy_run(data: Path, size: int, epochs: int, seed: int, precision: str, out: Path, log) -> dict:
    from ..core.files import read_json
    from ..model.weights import Weights
    from ..training.after_fit import Finish
    from ..training.presets import resolve
    from ..training.train import train

    cfg = resolve("fit-one-cycle", "cpu-quick", "none", data=str(data), size=size, epochs=epochs, seed=seed,
                  precision=precision, device="cpu")
    run = train(cfg, out=str(out), weights=Weights("none"), finish=Finish(figures=False),
                console=None)
    m, meta = read_json(run / "metrics.json"), read_json(run / "config.json")
    log(f"  seed {seed} {precision}: {m['accuracy'] * 100:.2f} % in {meta['fit_seconds']:.0f} s of fitting")
    return {"seed": seed, "precision": meta["config"]["precision"], "accuracy": m["accuracy"],
            "f1_macro": m["f1_macro"], "fit_s": meta["fit_seconds"], "n_val": m["n"]}


def _accuracy_summary(runs: list[dict]) -> dict:
    acc = {(r["seed"], r["precision"]): r["accuracy"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    diffs = [round(100 * (acc[(s, "bf16")] - acc[(s, "fp32")]), 2) for s in seeds]
    mean = statistics.mean(diffs)
    out = {"diff_points": diffs, "mean_diff_points": round(mean, 2),
           "sd_diff_points": round(statistics.stdev(diffs), 2) if len(diffs) > 1 else None,
           "within_rule": abs(mean) <= POINTS_ALLOWED}
    for p in PRECISIONS:
        out[f"{p}_mean_accuracy"] = round(statistics.mean(acc[(s, p)] for s in seeds), 4)
        out[f"{p}_mean_fit_s"] = round(statistics.mean(r["fit_s"] for r in runs if r["precision"] == p), 1)
    return out
