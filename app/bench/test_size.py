"""`python -m app bench --test-sizes RUN`: a finished run's model scored on its whole validation set
at its training size and at every size up to the decoded cache's room (training size x 1 to 1.25,
multiples of 8), with the same weights and images: what --test-scale is worth on that run. Random-
resized crops zoom in, so a model trained on them tends to see whole images best a little larger
than it trained (FixRes); the sizes between two multiples of 32, where one of AlexNet's pools
drops a row of its map (`pools_cover` false), show what that costs.
"""

from __future__ import annotations

import time
from pathlib import Path

from .timing import command_line


def test_sizes_for(size: int) -> list[int]:
    """The training size, then every multiple of 8 above it that the cache's room holds."""
    from ..core.config import CACHE_MAX, CACHE_ROOM

    top = min(size * CACHE_ROOM, max(size, CACHE_MAX))
    return [size, *range(-(-(size + 1) // 8) * 8, int(top) + 1, 8)]


def run_test_sizes(run: Path, sizes: list[int] | None = None, log=print) -> dict:
    from ..core.config import POOL_STRIDE
    from ..core.device import pick_device
    from ..core.files import read_json
    from ..core.rundir import device_info, versions
    from ..data.loaders import set_size
    from ..model.learner import load_run

    learn, cfg, ds = load_run(run, log=lambda *_: None)
    sizes = sizes or test_sizes_for(cfg.size)
    scored = Path(run) / "metrics.json"  # what the run's own evaluation said, when it made one
    res = {"what": "one run's model scored on its whole validation set at several test sizes (same weights)",
           "command": command_line(), "run": str(Path(run).resolve()), "device": device_info(pick_device(cfg.device,
           log=lambda *_: None)), "versions": versions(), "train_size": cfg.size, "run_test_size": cfg.test_size(),
           "run_metrics_accuracy": read_json(scored).get("accuracy") if scored.is_file() else None,
           "n": len(learn.dls.valid.items), "sizes": {}}
    log(f"test sizes: {run} (trained at {cfg.size} px) on {res['n']} validation images at {', '.join(map(str, sizes))} px")
    for size in sizes:
        set_size(learn.dls, cfg.size, test=size)
        t = time.perf_counter()
        loss, acc, *rest = learn.validate()
        secs = time.perf_counter() - t
        res["sizes"][str(size)] = {"accuracy": round(float(acc), 4), "valid_loss": round(float(loss), 4),
                                   "img_s": round(res["n"] / secs, 1), "pools_cover": size % POOL_STRIDE == 0}
        log(f"  {size} px: accuracy {float(acc):.2%}  valid loss {float(loss):.4f}  ({res['n'] / secs:.0f} img/s)")
    best = max(res["sizes"], key=lambda s: res["sizes"][s]["accuracy"])
    res["best_size"], res["best_minus_train_size_points"] = int(best), round(
        100 * (res["sizes"][best]["accuracy"] - res["sizes"][str(cfg.size)]["accuracy"]), 2)
    log(f"best: {best} px, {res['best_minus_train_size_points']:+.2f} points over {cfg.size} px "
        f"(chosen on the validation set itself: read it as a ceiling, not a held-out score)")
    return res
