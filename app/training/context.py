"""Opening a run (RunContext), the same for lr-find, fit-one-cycle and fine-tune: the data found,
the device picked and seeded, the run directory made (rank 0) and shared with the other ranks,
the log opened, the dataset scanned and loaded, skipped files listed, config.json written."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..core import ranks as dist
from ..core.config import TrainConfig, check_sizes
from ..core.device import pick_device, seed_everything
from ..core.rundir import device_info, load_config, new_run_dir, save_config, versions
from ..core.runlog import run_logger
from ..data.download import resolve_data
from ..data.loaders import make_dls
from ..data.scan import Dataset
from ..data.skipped import write_skipped


@dataclass
class RunContext:
    run: Path
    cfg: TrainConfig
    device: object
    log: object
    ds: Dataset
    dls: object
    started: float
    plan: object = None  # budget.Plan when --time planned the epochs
    fit_started: float = 0.0  # time.time() when fitting began (a resumed run: minus the seconds done before)


def open_run(cfg: TrainConfig | None, out: str | None = None, resume: str | None = None, console=None,
                 progress=None, ds=None, **info) -> RunContext:
    """A new run for `cfg` (or the run `resume` names, with its saved settings)."""
    started = time.time()
    if resume:
        run = Path(resume)
        cfg, _ = load_config(run)
    else:
        cfg = cfg.replace(data=str(resolve_data(cfg.data)))
    check_sizes(cfg)
    device = pick_device(cfg.device, log=console.print if console else print)
    dist.init(device)
    if not resume:
        run = Path(dist.broadcast(str(new_run_dir(cfg.command, out)) if dist.is_rank0() else None))
    seed_everything(cfg.seed, device)
    log = run_logger(run, console)
    ds, dls = make_dls(cfg, cfg.sizes()[0], device, progress=progress, log=log, ds=ds)  # resized per epoch later
    if dist.is_rank0():
        write_skipped(ds.skipped, run / "skipped.csv")
        if ds.skipped:
            log(f"skipped {len(ds.skipped)} unreadable file(s), listed in {run / 'skipped.csv'}")
        if not resume:
            save_config(run, cfg, versions=versions(), device=device_info(device), seed=cfg.seed,
                        classes=list(dls.vocab), synsets=ds.classes, data_fingerprint=ds.fingerprint(),
                        status="running", world_size=dist.world_size(), **info)
    return RunContext(run, cfg, device, log, ds, dls, started)
