"""`python -m app bench --export RUN`: RUN exported in every format that runs here (each checked, as
`export --format` checks it), then, in one process on this CPU, each one's load time, latency at
batch 1 (p50 / p99) and throughput at batch 32, with torch eager (the fastai model) beside them,
on real validation images through the bundle's preprocessing. The host's model-only training
speed is recorded with it: every time here is read against it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .timing import command_line

LATENCY_CALLS = 200  # batch-1 calls timed (p99 is the 2nd slowest)
THROUGHPUT_BATCHES = 10  # batches of 32 timed


def run_export_bench(run: Path, log=print, data=None) -> dict:
    from ..core.device import pick_device
    from ..core.rundir import device_info, versions
    from ..model.learner import load_run
    from ..shipping.export import export_learner, plain_model
    from ..shipping.formats import FORMATS, runs_here
    from .keep import model_only_img_s

    tmp = Path(tempfile.mkdtemp(prefix="app-bench-export-"))
    try:
        learn, cfg, ds = load_run(run, log=lambda *_: None, device="cpu")
        names = [f.name for f in FORMATS if runs_here(f)]
        res = {"device": device_info(pick_device("cpu", log=lambda *_: None)), "versions": versions(),
               "command": command_line(), "run": str(Path(run).resolve()), "size": cfg.size,
               "host_model_only_img_s_128px": model_only_img_s(Path(data or cfg.data), tmp / "probe")}
        log(f"export bench: {run} ({cfg.size} px) in {', '.join(names)} and torch eager; this host trains the "
            f"model alone at {res['host_model_only_img_s_128px']:.0f} img/s (128 px, bs 64)")
        pkl, bundle = export_learner(learn, run, tmp / "m.pkl", ds=ds, log=lambda *_: None, formats=names)
        res["checks"] = {k: v["check"] for k, v in _meta(bundle)["formats"].items()}
        x = _inputs(bundle, ds)
        res["formats"] = {"torch-eager": _time_torch(plain_model(learn), pkl, x)}
        for name in names:
            res["formats"][name] = _time_format(bundle, name, x)
        _report(res, log)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _meta(bundle: Path) -> dict:
    from ..model.bundle import read_meta

    return read_meta(bundle)


def _inputs(bundle: Path, ds) -> np.ndarray:
    """32 validation images as the bundle's users feed them (model.json's preprocessing)."""
    from ..model.bundle import to_input
    from ..shipping.formats import image_arrays

    meta = _meta(bundle)
    arrays = image_arrays(ds, "val", meta["input"]["size"], meta["input"].get("resize_method", "crop"), 32)
    return to_input((arrays * 32)[:32], meta["normalize"]["mean"], meta["normalize"]["std"])


def _time_format(bundle: Path, name: str, x: np.ndarray) -> dict:
    from ..shipping.formats import load_runner

    t = time.perf_counter()
    run = load_runner(bundle, name)
    run(x[:1])  # the first call of a runtime builds its kernels: part of loading
    return {"load_s": time.perf_counter() - t, **_speed(run, x)}


def _time_torch(model, pkl: Path, x: np.ndarray) -> dict:
    """The fastai model in eager PyTorch; loading is fastai's load_learner of the pickle."""
    import warnings

    import torch
    from fastai.learner import load_learner

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_learner(pkl, cpu=True)
    load_s = time.perf_counter() - t

    def run(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    run(x[:1])
    return {"load_s": load_s, "load": "fastai load_learner of the pickle", "threads": torch.get_num_threads(),
            **_speed(run, x)}


def _speed(run, x: np.ndarray) -> dict:
    """Latency of single images (ms, p50 / p99 of LATENCY_CALLS calls after 5 warm-up calls) and
    img/s of whole batches of 32."""
    for i in range(5):
        run(x[i : i + 1])
    lat = []
    for i in range(LATENCY_CALLS):
        t = time.perf_counter()
        run(x[i % 32 : i % 32 + 1])
        lat.append(1000 * (time.perf_counter() - t))
    run(x)
    t = time.perf_counter()
    for _ in range(THROUGHPUT_BATCHES):
        run(x)
    img_s = THROUGHPUT_BATCHES * len(x) / (time.perf_counter() - t)
    return {"latency_b1_p50_ms": float(np.percentile(lat, 50)), "latency_b1_p99_ms": float(np.percentile(lat, 99)),
            "throughput_b32_img_s": img_s, "latency_calls": LATENCY_CALLS, "throughput_images": THROUGHPUT_BATCHES * 32}


def _report(res: dict, log) -> None:
    from rich.table import Table

    t = Table(title=f"export bench: {res['device']}, {res['size']} px; host model-only "
              f"{res['host_model_only_img_s_128px']:.0f} img/s", title_justify="left")
    for col in ("format", "load s", "batch 1 p50 ms", "batch 1 p99 ms", "batch 32 img/s", "vs torch"):
        t.add_column(col, justify="left" if col == "format" else "right")
    base = res["formats"]["torch-eager"]["throughput_b32_img_s"]
    for name, r in res["formats"].items():
        t.add_row(name, f"{r['load_s']:.2f}", f"{r['latency_b1_p50_ms']:.2f}", f"{r['latency_b1_p99_ms']:.2f}",
                  f"{r['throughput_b32_img_s']:.0f}", f"{r['throughput_b32_img_s'] / base:.2f}x")
    log(t)
    q = res["checks"].get("onnx-int8")
    if q:
        log(f"  onnx-int8: top-1 agreement {100 * q['top1_agreement']:.1f} %, accuracy {100 * q['accuracy_torch']:.2f}"
            f" -> {100 * q['accuracy_int8']:.2f} % on {q['images']} validation images")
