"""--time MINUTES: the epochs that fit a wall-clock budget on this machine, kept to the second.

Machines that look alike differ 4x in speed, so a fixed epoch count cannot keep a time promise.
Before fitting, `measure` times this machine on the run's own model, precision and loader at every
image size of the schedule (training, training with the body frozen where fine-tune freezes it,
and validation) and a checkpoint write, over a few batches (a warm start with the same settings on
the same host recalls the last measurement after a spot check, `recall_or_measure`); `plan` (pure)
then lays the epochs over what is left of the budget. The plan is not trusted to the end:
training/keeper.py plans again at every epoch from the epochs' measured times (`choose`, the same pure rule, with `Costs` corrected
per image size) and lets the last epoch end early at the deadline, so the command ends at
1 - END_MARGIN of its budget. The epoch count changes (up to the preset's cap) and, only when the cap
still leaves time, the resizing fractions shrink so that more epochs run at the final size; the lr and
the augmentation are the preset's, and the one-cycle schedule follows the plan as it changes.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from ..core.config import TrainConfig
from ..core.device import autocast
from ..core.errors import UsageError
from .epochs import EpochPlan, frozen_epochs, plan_epochs, sizes_per_epoch, total_epochs

END_MARGIN = 0.015  # of the budget: the command aims to end at 98.5 %, room for the noise of what follows the fit


MIN_LAST = 0.15  # the last epoch may end early at the deadline, but is not planned shorter than this


FINISH_FIXED_S = 12.0  # figures, report, export after the fit; the main job's took ~13 s (745 s - 690 s fit - 42 s before)


@dataclass
class Speeds:
    """This machine, measured: img/s per image size."""

    train: dict[int, float]
    frozen: dict[int, float]
    valid: dict[int, float]
    checkpoint_s: float = 0.0


@dataclass
class Costs:
    """Seconds of one epoch from the measured speeds, times a correction per image size (the
    measured epochs' time over this prediction, training/keeper.py; 1 before any epoch ran)."""

    speeds: Speeds
    n_train: int
    n_val: int
    n_frozen: int = 0
    factors: dict[int, float] = field(default_factory=dict)
    default: float = 1.0

    def factor(self, size: int) -> float:
        return self.factors.get(size, self.default)

    def train_s(self, epoch: int, size: int) -> float:
        rate = (self.speeds.frozen.get(size) if epoch < self.n_frozen else None) or self.speeds.train[size]
        return self.n_train / rate * self.factor(size)

    def other_s(self, size: int, validates: bool) -> float:
        """The checkpoint, and the validation pass when the epoch validates."""
        return self.speeds.checkpoint_s + (self.n_val / self.speeds.valid[size] * self.factor(size) if validates else 0)

    def epoch_s(self, epoch: int, size: int, validates: bool) -> float:
        return self.train_s(epoch, size) + self.other_s(size, validates)


@dataclass
class Plan:
    epochs: int
    predicted_s: float  # the whole command, from process start
    predicted_fit_s: float
    budget_s: float
    elapsed_s: float  # spent before fitting (imports, scan, cache, model, this measurement)
    preset_epochs: int
    speeds: dict
    summary: str
    last_fraction: float = 1.0  # of the last epoch's batches, as first planned (the keeper re-plans)
    after_s: float = 0.0  # predicted for what follows the fit (evaluation, figures, report, export)
    sizes: list | None = None  # each epoch's image size, as first planned

    def to_dict(self) -> dict:
        return asdict(self)


def choose(cfg: TrainConfig, costs: Costs, done: list[int], available_s: float, lo: int, hi: int):
    """(EpochPlan, fraction of the last epoch, predicted seconds) for the epochs after `done`
    (sizes of the global epochs already run) in `available_s`: the fewest epochs (between `lo` and
    `hi` in all) that fill it, the last one ending early at the deadline. When that last epoch would
    be shorter than MIN_LAST, one epoch fewer run whole (ending a little early). When even `hi`
    epochs leave time, it goes to the final size (`at_the_final_size`)."""
    got = _fewest(cfg, costs, done, available_s, lo, hi)
    if got[0].total >= hi and got[1] == 1.0 and cfg.progressive:
        return at_the_final_size(cfg, costs, done, available_s, got)
    return got


FILL_STEPS = 50  # at the epoch cap, the low-resolution share shrinks in steps of 1/FILL_STEPS


def at_the_final_size(cfg: TrainConfig, costs: Costs, done: list[int], available_s: float, got):
    """At the epoch cap with time left, the same epochs with less of them at the small sizes (their
    fractions scaled down together, to none) as far as the time holds: a fast host (bf16 with AMX
    ran the main job's 57 epochs in 607-665 s of 900) spends what is left at the size it is judged at,
    not in more epochs (its 57 scored as fp32's 34-44 did, benchmarks/precision-budget-amx.json)."""
    best = got
    for k in range(FILL_STEPS - 1, -1, -1):
        p = plan_epochs(cfg.replace(progressive=cfg.shrunk_progressive(k / FILL_STEPS)), got[0].total, done)
        secs = plan_seconds(costs, p, len(done))
        if secs > available_s:
            break
        best = (p, 1.0, secs)
    return best


def _fewest(cfg: TrainConfig, costs: Costs, done: list[int], available_s: float, lo: int, hi: int):
    e, prev = len(done), None
    for total in range(max(lo, e + 1), max(hi, e + 1) + 1):
        p = plan_epochs(cfg, total, done)
        if plan_seconds(costs, p, e) >= available_s:
            head, last = plan_seconds(costs, p, e) - costs.epoch_s(total - 1, p.sizes[-1], p.valid[-1]), total - 1
            frac = (available_s - head - costs.other_s(p.sizes[last], True)) / costs.train_s(last, p.sizes[last])
            if frac < MIN_LAST and prev is not None:
                return prev
            frac = min(1.0, max(frac, 0.0))
            return p, frac, head + costs.other_s(p.sizes[last], True) + frac * costs.train_s(last, p.sizes[last])
        prev = (p, 1.0, plan_seconds(costs, p, e))
    return prev


def epochs_cost(cfg: TrainConfig, speeds: Speeds, n_train: int, n_val: int) -> tuple[float, float]:
    """(fit seconds, after-fit seconds) predicted for `cfg` as it stands, every epoch whole."""
    costs = Costs(speeds, n_train, n_val, frozen_epochs(cfg))
    return plan_seconds(costs, plan_epochs(cfg, total_epochs(cfg), [])), after_seconds(costs, cfg.size)


def after_seconds(costs: Costs, size: int, passes: int = 0) -> float:
    """What follows the fit: figures, report and export, and `passes` more validation passes (TTA,
    or a multi-process run, whose evaluation cannot reuse the last epoch's predictions)."""
    return FINISH_FIXED_S + passes * costs.n_val / costs.speeds.valid[size] * costs.factor(size)


def epoch_bounds(cfg: TrainConfig) -> tuple[int, int]:
    """The fewest and most global epochs a plan may have: a minimal run (2 epochs, or a fine-tune's
    frozen ones plus one) up to 3 x the preset's (or max_epochs)."""
    n_frozen = frozen_epochs(cfg)
    lo = n_frozen + 1 if cfg.command == "fine-tune" else 2
    return lo, n_frozen + (cfg.max_epochs or 3 * cfg.epochs)


def plan(cfg: TrainConfig, speeds: Speeds, n_train: int, n_val: int, budget_s: float, elapsed_s: float,
         passes_after: int = 0) -> Plan:
    """The first plan: the epochs (the unfrozen ones for fine-tune) that fill the budget to
    1 - END_MARGIN, from a minimal run up to 3 x the preset's. UsageError naming what would fit when
    not even the minimal run does."""
    costs = Costs(speeds, n_train, n_val, frozen_epochs(cfg))
    lo, hi = epoch_bounds(cfg)
    after = after_seconds(costs, cfg.size, passes_after)
    left = budget_s * (1 - END_MARGIN) - elapsed_s - after
    minimal = plan_seconds(costs, plan_epochs(cfg, lo, []))
    if minimal > left:
        need = (elapsed_s + minimal + after) / (1 - END_MARGIN) / 60
        err = UsageError(f"--time {budget_s / 60:g} cannot hold a useful run on this machine "
                         f"({describe_speeds(speeds)}): the minimal run ({lo - frozen_epochs(cfg)} epoch(s)"
                         f"{' after the frozen one' if cfg.command == 'fine-tune' else ''}) needs about "
                         f"{need:.1f} min; pass --time {math.ceil(need)} or more, or a smaller --size")
        err.need_minutes = need  # audit's folds: the budget that would hold them all
        raise err
    p, frac, fit = choose(cfg, costs, [], left, lo, hi)
    e = p.total - frozen_epochs(cfg)
    summary = (f"this machine: {describe_speeds(speeds)} -> {e} epoch(s) fit in {budget_s / 60:g} min "
               f"(predicted {(elapsed_s + fit + after) / 60:.1f} min; re-planned at every epoch)")
    if e < cfg.epochs:
        summary += f"; fewer than the preset's {cfg.epochs}: this machine is slower than the recipe assumes"
    summary += _at_cap(cfg, p, hi, left - fit)
    return Plan(e, round(elapsed_s + fit + after, 1), round(fit, 1), budget_s, round(elapsed_s, 1), cfg.epochs,
                asdict(speeds), summary, round(frac, 3), round(after, 1), list(p.sizes))


def _at_cap(cfg: TrainConfig, p: EpochPlan, hi: int, spare_s: float) -> str:
    """What the plan line adds when the epoch cap binds: where the time left went, and what is left."""
    recipe = plan_epochs(cfg, p.total, []).sizes
    if p.total < hi or (p.sizes == recipe and spare_s < 60):
        return ""
    said = f"; {p.total} is the most this recipe runs"
    if p.sizes != recipe:
        said += (f", so the time left goes to {cfg.size} px: {p.sizes.count(cfg.size)} of them there "
                 f"(the recipe's schedule: {recipe.count(cfg.size)})")
    return said + (f"; it ends about {spare_s / 60:.1f} min early" if spare_s >= 60 else "")


def plan_seconds(costs: Costs, p: EpochPlan, start: int = 0) -> float:
    """Predicted seconds of a plan's epochs from `start` on, every one whole."""
    return sum(costs.epoch_s(i, p.sizes[i], p.valid[i]) for i in range(start, p.total))


def describe_speeds(s: Speeds) -> str:
    parts = [f"{s.train[size]:.0f} img/s at {size} px" if i == 0 else f"{s.train[size]:.0f} at {size}"
             for i, size in enumerate(sorted(s.train))]
    return ", ".join(parts) + " (training)"


ROUNDS, PER_ROUND = 4, 2  # timed rounds of batches; the first is discarded (oneDNN builds its kernels there)
BF16_MARGIN = 1.2  # --precision auto on a CPU takes bf16 when it trains at least this much faster here


def measure(learn, cfg: TrainConfig, device, ckpt_dir, known: dict | None = None) -> Speeds:
    """img/s of this Learner's own model, loss, precision and loaders at every size the run uses
    (on a copy of the model: the run's weights, optimizer and random state are left as they were);
    `known`: training rates already measured ({size: img/s}, e.g. by choose_precision)."""
    from ..core.device import resolve_precision
    from ..data.loaders import set_size

    precision = resolve_precision(cfg.precision, device)  # the precision the run trains in
    sizes = sorted(set(sizes_per_epoch(cfg)))
    frozen_sizes = sorted(set(sizes_per_epoch(cfg)[: frozen_epochs(cfg)]))
    speeds = Speeds({}, {}, {})
    with _probe(learn, cfg, device, sizes[0]) as model:
        for size in sizes:
            set_size(learn.dls, size)
            speeds.train[size] = (known or {}).get(size) or _train_rate(learn, model, device, False, precision)
            if size in frozen_sizes:
                speeds.frozen[size] = _train_rate(learn, model, device, True, precision)
            speeds.valid[size] = _valid_rate(learn, model, device, precision)
        speeds.checkpoint_s = _checkpoint_time(model, ckpt_dir)
    return speeds


REMEMBER_MAX_AGE_S = 7 * 86400  # a remembered measurement older than this is measured again
SPOT_TOLERANCE = 0.25  # the spot check's rate may differ this much from the remembered one
SPOT_ROUND_S = 0.5  # each spot round holds the batches of about this long (one at 128 px on a 2-core host)
SPEED_FIELDS = ("command", "data", "labels", "layout", "label_delim", "balance", "resize", "body_layers", "size",
                "progressive", "test_scale", "bs", "loader", "mixup", "channels_last", "precision", "compile",
                "workers", "device", "freeze_epochs")  # the settings a run's img/s depends on


def speeds_key(cfg: TrainConfig, device, n_classes: int) -> str:
    """What a measurement depends on: this host (CPU model, cores, threads, torch), the device, the
    model (classes, head, body frozen or not per size) and the batches (sizes, bs, loader, layout)."""
    import hashlib
    import json
    import os
    import platform

    from ..core.device import cpu_model

    what = {"host": [cpu_model(), os.cpu_count(), torch.get_num_threads(), torch.__version__, platform.machine()],
            "device": str(device), "classes": n_classes,
            "cfg": {k: getattr(cfg, k) for k in SPEED_FIELDS},
            "sizes": sorted(set(sizes_per_epoch(cfg))), "frozen": sorted(set(sizes_per_epoch(cfg)[: frozen_epochs(cfg)]))}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recall_or_measure(learn, cfg: TrainConfig, device, ckpt_dir, key: str, known: dict | None = None):
    """`measure`, or the rates a run with the same key measured here in the last week when a spot
    check (the median of two rounds of about SPOT_ROUND_S at the final size, after a batch of warm-up
    and a first round that is dropped: on one round alone a warm start disagreed once in three, and
    single batches of small images are too short to time) agrees with them within
    SPOT_TOLERANCE: a warm start then skips most of the probe (16 s of a 28 s warm start on a
    2-core host). They are used as remembered, the median of that run's rounds (one spot reading
    must not set the schedule: it read 1.19x on an idle host), and the keeper corrects them at every
    epoch as it does a fresh measurement. Returns (speeds, what config.json records of it)."""
    from ..core.device import resolve_precision
    from ..data.loaders import set_size

    path = remembered_path(key)
    old = _remembered(path)
    if old is not None and not known:
        per_round = max(1, math.ceil(SPOT_ROUND_S * old["speeds"].train[cfg.size] / cfg.bs))
        with _probe(learn, cfg, device, cfg.size) as model:
            set_size(learn.dls, cfg.size)
            spot = _train_rate(learn, model, device, False, resolve_precision(cfg.precision, device),
                               rounds=3, per_round=per_round)  # its first round dropped
        ratio = spot / old["speeds"].train[cfg.size]
        info = {"source": "remembered", "measured_at": old["measured_at"], "key": key, "spot_size": cfg.size,
                "spot_img_s": round(spot, 1), "remembered_img_s": round(old["speeds"].train[cfg.size], 1),
                "ratio": round(ratio, 3), "tolerance": SPOT_TOLERANCE}
        if abs(ratio - 1) <= SPOT_TOLERANCE:
            return old["speeds"], info
        info["source"] = "measured: the spot check disagreed with the remembered rates"
    else:
        info = {"source": "measured", "key": key}
    speeds = measure(learn, cfg, device, ckpt_dir, known)
    _remember(path, {"speeds": asdict(speeds)})
    return speeds, info


def describe_recall(info: dict) -> str:
    import datetime

    ago = datetime.timedelta(seconds=round(time.time() - info["measured_at"]))
    said = (f"speeds: remembered from a run {ago} ago on this host and checked now at {info['spot_size']} px "
            f"({info['spot_img_s']:.0f} img/s now, {info['remembered_img_s']:.0f} then, {info['ratio']:.2f}x)")
    if info["source"] == "remembered":
        return said + ": the probe skipped"
    return said + f": more than {info['tolerance']:.0%} apart, measured again"


def _remembered(path) -> dict | None:
    try:
        d = _fresh(path)
        sp = d["speeds"]
        speeds = Speeds(*({int(k): float(v) for k, v in sp[x].items()} for x in ("train", "frozen", "valid")),
                        float(sp["checkpoint_s"]))
        return {"speeds": speeds, "measured_at": float(d["measured_at"])} if speeds.train else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # none, unreadable, too old or of an older layout: measured again


def _fresh(path) -> dict:
    """A remembered measurement younger than REMEMBER_MAX_AGE_S (else KeyError)."""
    import json

    d = json.loads(path.read_text(encoding="utf-8"))
    if not 0 <= time.time() - float(d["measured_at"]) <= REMEMBER_MAX_AGE_S:
        raise KeyError("measured_at")
    return d


def _remember(path, what: dict) -> None:
    from ..core.files import write_json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"measured_at": time.time(), **what})
    except OSError:
        pass  # a cache that cannot be written: the next run measures again


def remembered_path(key: str, what: str = ""):
    """The cache's file of a measurement remembered under `key` (`what`: "precision-" for the choice)."""
    from ..core.paths import cache_root

    return cache_root() / "speeds" / f"{what}{key}.json"


def choice_path(key: str):
    return remembered_path(key, "precision-")


def recall_or_choose(learn, cfg: TrainConfig, device, key: str) -> dict:
    """`choose_precision`, or the choice a run with the same settings (`speeds_key` of precision auto)
    made on this host in the last week: its timing was most of a warm start on a bf16 host (9.3 s of
    it). The chosen precision's rates are then spot-checked as any remembered ones are
    (`recall_or_measure`); a spot check that disagrees forgets the choice too (`forget_choice`), so
    the next run times both again."""
    try:
        old = _fresh(choice_path(key))
        c = {k: float(old["choice"][k]) for k in ("fp32_img_s", "bf16_img_s", "ratio")}
        c.update(size=int(old["choice"]["size"]), margin=BF16_MARGIN,
                 chosen="bf16" if c["ratio"] >= BF16_MARGIN else "fp32")  # today's margin on the remembered rates
        return {**c, "source": "remembered", "measured_at": float(old["measured_at"]), "key": key}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # none, unreadable, too old or of an older layout: timed again
    choice = choose_precision(learn, cfg, device)
    _remember(choice_path(key), {"choice": choice})
    return {**choice, "source": "measured", "key": key}


def forget_choice(key: str) -> None:
    try:
        choice_path(key).unlink(missing_ok=True)
    except OSError:
        pass  # a cache that cannot be written: the choice stays until it is a week old


def choose_precision(learn, cfg: TrainConfig, device) -> dict:
    """--precision auto on a CPU with native bf16: fp32 and bf16 timed on the run's own model and
    loader at its final size, in interleaved rounds (a slow moment costs both alike), each rate the
    median of its rounds after the first; bf16 when it is BF16_MARGIN x faster. A budgeted run is
    judged at equal time, where bf16's extra epochs outweigh its small loss per epoch (README)."""
    from ..data.loaders import set_size

    with _probe(learn, cfg, device, cfg.size) as model:
        set_size(learn.dls, cfg.size)
        steps = {p: _train_step(learn, model, device, p) for p in ("fp32", "bf16")}
        rates = _rates(learn.dls.train, steps)
    ratio = rates["bf16"] / rates["fp32"]
    chosen = "bf16" if ratio >= BF16_MARGIN else "fp32"
    return {"chosen": chosen, "size": cfg.size, "fp32_img_s": round(rates["fp32"], 1),
            "bf16_img_s": round(rates["bf16"], 1), "ratio": round(ratio, 3), "margin": BF16_MARGIN}


def describe_choice(c: dict) -> str:
    import datetime

    when = ""
    if c.get("source") == "remembered":
        when = f"remembered from a run {datetime.timedelta(seconds=round(time.time() - c['measured_at']))} ago here, "
    return (f"precision auto: {c['chosen']} ({when}training at {c['size']} px: fp32 {c['fp32_img_s']:.0f} img/s, bf16 "
            f"{c['bf16_img_s']:.0f} img/s, {c['ratio']:.2f}x; bf16 is taken at {c['margin']:g}x or more)")


class _probe:
    """A copy of the model, laid out as training will, with the loaders' random state and size put
    back afterwards."""

    def __init__(self, learn, cfg, device, size):
        self.learn, self.cfg, self.device, self.size = learn, cfg, device, size

    def __enter__(self):
        from .state import rng_state

        self.state = rng_state(self.learn.dls, self.device)
        model = copy.deepcopy(self.learn.model).to(self.device)
        return model.to(memory_format=torch.channels_last) if self.cfg.channels_last else model

    def __exit__(self, *exc):
        from ..data.loaders import set_size
        from .state import set_rng_state

        set_size(self.learn.dls, min(self.cfg.sizes()))
        set_rng_state(self.state, self.learn.dls, self.device)
        return False


def _rates(dl, steps: dict, warmup: int = 1, rounds: int = ROUNDS, per_round: int = PER_ROUND) -> dict[str, float]:
    """img/s of each step over the loader's batches (loading included), in interleaved rounds of
    `per_round` batches after `warmup` batches each: the median of each step's rounds but its first
    (one slow reading cannot set the schedule), going round the loader again on a small dataset."""
    from ..core.device import sync

    need = (warmup + rounds * per_round) * len(steps)
    batches = itertools.islice(itertools.chain.from_iterable(iter(dl) for _ in range(need)), need)
    got: dict[str, list[float]] = {k: [] for k in steps}
    for step in steps.values():
        for _ in range(warmup):
            step(*_next(batches))
    for _ in range(rounds):
        for k, step in steps.items():
            t0, n = time.perf_counter(), 0
            for _ in range(per_round):
                xb, yb = _next(batches)
                step(xb, yb)
                n += len(yb)
            sync(xb.device)
            got[k].append(n / (time.perf_counter() - t0))
    return {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in got.items()}


def _next(batches):
    batch = next(batches, None)
    if batch is None:
        raise UsageError("--time: the dataset holds no full batch to time; lower --bs")
    return batch


def _inputs(xb, device):
    return xb.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last)


def _train_step(learn, model, device, precision: str):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = learn.opt_func(params, lr=1e-12)
    model.train()

    def step(xb, yb):
        with autocast(precision, device):
            loss = learn.loss_func(model(_inputs(xb, device)), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def _train_rate(learn, model, device, freeze: bool, precision: str = "fp32", **rounds) -> float:
    body = list(model[0].parameters())
    for p in body:
        p.requires_grad_(not freeze)
    rate = _rates(learn.dls.train, {"train": _train_step(learn, model, device, precision)}, **rounds)["train"]
    for p in body:
        p.requires_grad_(True)
    return rate


def _valid_rate(learn, model, device, precision: str = "fp32") -> float:
    model.eval()

    def step(xb, yb):
        with torch.no_grad(), autocast(precision, device):
            model(_inputs(xb, device))

    return _rates(learn.dls.valid, {"valid": step}, rounds=3)["valid"]


def _checkpoint_time(model, ckpt_dir) -> float:
    """One epoch-end checkpoint's write (model and Adam's two moments), timed on the run's disk."""
    from .state import atomic_save

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"model": state, "opt": [{k: v.clone() for k, v in state.items()} for _ in range(2)]}  # Adam's moments
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / "time-probe.pth"
    t = time.perf_counter()
    atomic_save(obj, path)
    took = time.perf_counter() - t
    path.unlink()
    return took
