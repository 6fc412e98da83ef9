"""`python -m app bench --export RUN`: RUN exported in every format that runs here (each checked, as
`export --format` checks it), then, in one process on this CPU, each one's load time, latency at
batch 1 (p50 / p99) and throughput at batch 32, with torch eager (the fastai model) beside them,
on real validation images through the bundle's preprocessing: interleaved rounds (every format
once per round), the best of the rounds kept for each measure, as the speed bench does (a shared
machine drifts over seconds). The host's model-only training speed is recorded before and after:
every time here is read against it.
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


def run_export_bench(run: Path, log=print, data=None, repeats: int = 3) -> dict:
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
               "command": command_line(), "run": str(Path(run).resolve()), "size": cfg.test_size(),
               "host_model_only_img_s_128px": model_only_img_s(Path(data or cfg.data), tmp / "probe")}
        log(f"export bench: {run} ({cfg.test_size()} px) in {', '.join(names)} and torch eager; this host trains the "
            f"model alone at {res['host_model_only_img_s_128px']:.0f} img/s (128 px, bs 64)")
        pkl, bundle = export_learner(learn, run, tmp / "m.pkl", ds=ds, log=lambda *_: None, formats=names)
        res["checks"] = {k: v["check"] for k, v in _meta(bundle)["formats"].items()}
        x = _inputs(bundle, ds)
        runners = {"torch-eager": _load_torch(plain_model(learn), pkl, x),
                   **{name: _load_format(bundle, name, x) for name in names}}
        rounds = {k: [] for k in runners}
        for _ in range(repeats):
            for k, (run_fn, _) in runners.items():
                rounds[k].append(_speed(run_fn, x))
        res["rounds"] = repeats
        res["formats"] = {k: {**info, **_best(rounds[k])} for k, (_, info) in runners.items()}
        res["host_model_only_img_s_128px_after"] = model_only_img_s(Path(data or cfg.data), tmp / "probe2")
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


def _load_format(bundle: Path, name: str, x: np.ndarray):
    """(the loaded runner, its load time); the first call builds the runtime's kernels: loading."""
    from ..shipping.formats import load_runner

    t = time.perf_counter()
    run = load_runner(bundle, name)
    run(x[:1])
    return run, {"load_s": time.perf_counter() - t}


def _best(rounds: list[dict]) -> dict:
    """Each measure's best round (the least disturbed), and every round's numbers."""
    return {"latency_b1_p50_ms": min(r["latency_b1_p50_ms"] for r in rounds),
            "latency_b1_p99_ms": min(r["latency_b1_p99_ms"] for r in rounds),
            "throughput_b32_img_s": max(r["throughput_b32_img_s"] for r in rounds),
            "latency_calls": rounds[0]["latency_calls"], "throughput_images": rounds[0]["throughput_images"],
            "per_round": [{k: round(v, 2) for k, v in r.items() if k.endswith(("_ms", "_img_s"))} for r in rounds]}


def _load_torch(model, pkl: Path, x: np.ndarray):
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
    return run, {"load_s": load_s, "load": "fastai load_learner of the pickle", "threads": torch.get_num_threads()}


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

    t = Table(title=f"export bench: {res['device']}, {res['size']} px, best of {res['rounds']} rounds; host "
              f"model-only {res['host_model_only_img_s_128px']:.0f} / {res['host_model_only_img_s_128px_after']:.0f} "
              "img/s before / after", title_justify="left")
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
