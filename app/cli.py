"""The command line: parse, check, call one library function per command, print where things are.

Heavy libraries (torch, fastai) are imported inside the commands that need them, so `--help`
and bundle `predict` start in well under a second. Known failures are one line on stderr with a
documented exit code (README, "Exit codes"); APP_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape

from . import errors
from .errors import AppError
from .settings import PRESETS, TrainConfig, check_size, parse_progressive

_T0 = time.time()  # process start, near enough: the heavy imports come later


def _width(stream) -> int | None:
    """Piped output (logs, CI, files) gets wide tables, not rich's 80-column default."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 160


# soft_wrap: piped output keeps one line per message instead of wrapping at the width
console = Console(stderr=False, highlight=False, soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train, judge and ship an AlexNet image classifier by transfer learning (fastai). "
    "Start with `python -m app train`.",
)


class Loader(str, Enum):
    fast = "fast"
    fastai = "fastai"


class Which(str, Enum):
    last = "last"
    best = "best"


PRESET_NAMES = ", ".join(["auto", *PRESETS])
DataOpt = Annotated[Optional[Path], typer.Option(
    "--data", help="Dataset root holding train/<class>/ and val/<class>/.",
    show_default="../shared/data/imagenette2-224 if present, else download Imagenette")]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="Run directory to create (must not exist).", show_default="runs/<command>-<n>")]
PresetOpt = Annotated[str, typer.Option(
    "--preset", help=f"Named recipe ({PRESET_NAMES}); flags you give override it. auto: cpu-quick on "
    "CPU, gpu-fast on a GPU, finetune when --weights is not none.")]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="imagenet (torchvision download), none (random init), a torchvision AlexNet "
    "state dict (.pth) or an exported bundle directory.", show_default="none")]
SizeOpt = Annotated[Optional[int], typer.Option("--size", help="Image size in pixels (>= 64).", show_default="preset's")]
BsOpt = Annotated[Optional[int], typer.Option("--bs", help="Batch size.", show_default="preset's")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Epochs.", show_default="preset's")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", help="Maximum learning rate.", show_default="preset's")]
LrFromOpt = Annotated[Optional[Path], typer.Option(
    "--lr-from", help="Take --lr from this lr-find run's recommendation.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (CPU runs repeat exactly).")]
LoaderOpt = Annotated[Optional[Loader], typer.Option(
    "--loader", help="fast: decoded cache, batch augmentation on the device; fastai: the stock DataBlock.",
    show_default="preset's (fast)")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
ResumeOpt = Annotated[Optional[Path], typer.Option(
    "--resume", help="Continue this run from its last finished epoch, with its saved settings.")]
ProgressiveOpt = Annotated[Optional[str], typer.Option(
    "--progressive", help="Progressive resizing before --size: SIZE:FRACTION of the epochs, comma separated "
    "(e.g. 64:0.35,96:0.41), or none.", show_default="preset's, scaled to --size")]
CompileOpt = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model.")]
ValidEveryOpt = Annotated[Optional[int], typer.Option(
    "--valid-every", min=1, help="Validate every N epochs (always at each image size's last epoch and the last "
    "epoch); 1 = every epoch.", show_default="preset's")]
ClipOpt = Annotated[Optional[float], typer.Option(
    "--clip", min=0.0, help="Clip the gradient norm to this (fastai GradientClip); 0 = off.", show_default="preset's")]
MixupOpt = Annotated[Optional[float], typer.Option(
    "--mixup", min=0.0, help="fastai MixUp with this alpha; 0 = off.", show_default="preset's")]
TtaFlag = Annotated[bool, typer.Option("--tta/--no-tta", help="Also score with test-time augmentation.")]
ExportFlag = Annotated[bool, typer.Option("--export/--no-export", help="Export the model when training ends.")]
EvalFlag = Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Metrics, figures and report when training ends.")]
PICKLE_WARNING = ("A .pkl learner is a Python pickle: loading it runs code from the file. Only load "
                  "pickles you made or trust; a bundle directory needs no pickle.")


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err_console, transient=True,
                    disable=not err_console.is_terminal and os.environ.get("APP_PROGRESS") != "1")


def _config(ctx: typer.Context, command: str, preset: str, weights: Optional[str], **flags) -> TrainConfig:
    """Defaults < preset < the flags the user typed."""
    from .settings import auto_preset

    weights = weights or "none"
    if preset == "auto":
        import torch

        preset = auto_preset(weights, torch.cuda.is_available())
    if preset not in PRESETS and preset != "none":
        raise typer.BadParameter(f"unknown preset {preset!r}; choose from {PRESET_NAMES}", param_hint="--preset")
    values = dict(PRESETS.get(preset, {}))
    values.pop("command", None)
    cfg = TrainConfig(command=command, preset=preset, weights=weights).replace(**values)
    given = {k: (v.value if isinstance(v, Enum) else v) for k, v in flags.items() if v is not None}
    if "size" in given and "progressive" not in given:  # keep the preset's resizing ratios
        given["progressive"] = cfg.scaled_progressive(given["size"])
    if given.get("progressive") == "none":
        given["progressive"] = ""
    try:
        parse_progressive(given.get("progressive", cfg.progressive))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--progressive") from None
    if "lr_from" in given:
        given["lr_from"] = str(given["lr_from"])
    if "data" in given:
        given["data"] = str(given["data"])
    return cfg.replace(**given)


def _after_training(tta: bool, export: bool = False):
    def after(learn, run):
        from .evaluate import evaluate_learner
        from .report import write_report
        from .runs import is_rank0, load_config

        cfg, _ = load_config(run)
        if is_rank0():
            from .data import scan

            evaluate_learner(learn, run, cfg, tta=tta, log=console.print, ds=scan(cfg.data))
            write_report(run)
            console.print(f"report: {run / 'report.html'}")
            if export:
                from .export import export_learner

                export_learner(learn, run, None, log=console.print)
    return after


def _precheck(out, resume, weights, data) -> None:
    """Mistakes in paths are reported before the seconds it takes to import torch and fastai."""
    from .data import check_layout
    from .model import check_weights
    from .runs import check_out, load_config

    if resume:
        load_config(resume)
        return
    check_out(out)
    check_weights(weights)
    if data:
        check_layout(Path(data))


def _train(ctx, command, preset, weights, out, resume, evaluate, tta=False, export=False, **flags) -> Path:
    if resume and out:
        raise typer.BadParameter("--resume continues an existing run; it cannot take --out", param_hint="--out")
    _precheck(out, resume, weights, flags.get("data"))
    cfg = None if resume else _config(ctx, command, preset, weights, **flags)
    if cfg:
        for s in [cfg.size] + [s for s, _ in parse_progressive(cfg.progressive)]:
            check_size(s)
    if cfg:
        console.print(f"[bold]{command}[/] preset={cfg.preset} epochs={cfg.epochs} lr={cfg.lr:g} size={cfg.size}"
                      f"{f' (progressive {cfg.progressive})' if cfg.progressive else ''} bs={cfg.bs} loader={cfg.loader} "
                      f"weights={cfg.weights}")
    from .train import train

    with _progress() as progress:
        run = train(cfg, out=str(out) if out else None, console=console, progress=progress,
                    resume=str(resume) if resume else None,
                    after=_after_training(tta, export) if evaluate else None)
    if not resume:  # all included: cache build, training, evaluation, figures, report, export
        from .runs import update_config

        update_config(run, wall_seconds=round(time.time() - _T0, 1))
    console.print(f"run: {run}")
    return run


@app.command()
def data(
    root: Annotated[Path, typer.Argument(help="Dataset root with train/ and val/.")],
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Decode every image to find bad files.")] = True,
):
    """What is in a dataset: classes (folder + human name), counts per split, files that cannot be used."""
    from .data import describe

    with _progress() as progress:
        describe(root, console, verify=verify, progress=progress)


@app.command("lr-find")
def lr_find_cmd(
    ctx: typer.Context, data: DataOpt = None, size: SizeOpt = None, bs: BsOpt = None, weights: WeightsOpt = None,
    out: OutOpt = None, preset: PresetOpt = "auto", loader: LoaderOpt = None, seed: SeedOpt = 42,
    device: DeviceOpt = "auto",
):
    """fastai lr_find: the four suggestions (valley, slide, minimum, steep), a recommended lr, the plot."""
    from .train import lr_find

    cfg = _config(ctx, "lr-find", preset, weights, data=data, size=size, bs=bs, loader=loader, seed=seed,
                  device=device)
    cfg = cfg.replace(progressive="")  # one size: the one lr-find measures
    with _progress() as progress:
        run = lr_find(cfg, out=str(out) if out else None, console=console, progress=progress)
    console.print(f"run: {run}\nplot: {run / 'figures' / '10_lr_find.png'}")


@app.command("fit-one-cycle")
def fit_one_cycle_cmd(
    ctx: typer.Context, data: DataOpt = None, epochs: EpochsOpt = None, lr: LrOpt = None,
    lr_from: LrFromOpt = None, size: SizeOpt = None, bs: BsOpt = None, weights: WeightsOpt = None,
    out: OutOpt = None, preset: PresetOpt = "auto", loader: LoaderOpt = None, seed: SeedOpt = 42,
    device: DeviceOpt = "auto", resume: ResumeOpt = None, compile: CompileOpt = False,
    progressive: ProgressiveOpt = None, valid_every: ValidEveryOpt = None, clip: ClipOpt = None,
    mixup: MixupOpt = None, evaluate: EvalFlag = True,
    tta: TtaFlag = False, export: ExportFlag = False,
):
    """fastai fit_one_cycle on the whole model (from random init by default)."""
    _train(ctx, "fit-one-cycle", preset, weights, out, resume, evaluate, tta, export, data=data, epochs=epochs,
           lr=lr, lr_from=lr_from, size=size, bs=bs, loader=loader, seed=seed, device=device,
           compile=compile or None, progressive=progressive,
           valid_every=valid_every, clip=clip, mixup=mixup)


@app.command("fine-tune")
def fine_tune_cmd(
    ctx: typer.Context, data: DataOpt = None, epochs: EpochsOpt = None,
    freeze_epochs: Annotated[Optional[int], typer.Option("--freeze-epochs", help="Epochs with the body frozen.",
                                                         show_default="preset's")] = None,
    lr: LrOpt = None, lr_from: LrFromOpt = None, size: SizeOpt = None, bs: BsOpt = None,
    weights: WeightsOpt = None, out: OutOpt = None, preset: PresetOpt = "auto", loader: LoaderOpt = None,
    seed: SeedOpt = 42, device: DeviceOpt = "auto", resume: ResumeOpt = None, compile: CompileOpt = False,
    progressive: ProgressiveOpt = None, valid_every: ValidEveryOpt = None, clip: ClipOpt = None,
    mixup: MixupOpt = None, evaluate: EvalFlag = True,
    tta: TtaFlag = False, export: ExportFlag = False,
):
    """fastai fine_tune: body frozen for --freeze-epochs, then all layers with discriminative lrs."""
    _train(ctx, "fine-tune", preset, weights, out, resume, evaluate, tta, export, data=data, epochs=epochs,
           freeze_epochs=freeze_epochs, lr=lr, lr_from=lr_from, size=size, bs=bs, loader=loader, seed=seed,
           device=device, compile=compile or None, progressive=progressive,
           valid_every=valid_every, clip=clip, mixup=mixup)


@app.command("train")
def train_cmd(
    ctx: typer.Context, data: DataOpt = None, weights: WeightsOpt = None, out: OutOpt = None,
    preset: PresetOpt = "auto", epochs: EpochsOpt = None, seed: SeedOpt = 42, device: DeviceOpt = "auto",
    tta: TtaFlag = False,
):
    """The main job: train with the recipe for this machine, evaluate, write the report, export the model."""
    from .settings import PRESETS as P

    p = preset
    if p == "auto":
        import torch

        from .settings import auto_preset

        p = auto_preset(weights or "none", torch.cuda.is_available())
    command = P.get(p, {}).get("command", "fit-one-cycle")
    run = _train(ctx, command, p, weights, out, None, True, tta, export=True, data=data, epochs=epochs,
                 seed=seed, device=device)
    from .runs import read_json

    m = read_json(run / "metrics.json")
    console.print(f"[bold]accuracy {m['accuracy'] * 100:.2f}%[/]  metrics: {run / 'metrics.json'}  "
                  f"figures: {run / 'figures'}  report: {run / 'report.html'}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    tta: TtaFlag = False,
    which: Annotated[Which, typer.Option("--which", help="Which saved model.")] = Which.last,
    data: Annotated[Optional[Path], typer.Option("--data", help="The dataset, if it moved since training.")] = None,
):
    """Metrics (scikit-learn), confusion matrix, most confused, top losses and all figures for a run."""
    from .evaluate import evaluate_run
    from .report import write_report

    evaluate_run(run, tta=tta, which=which.value, data=str(data) if data else None, console=console)
    write_report(run)
    console.print(f"metrics: {run / 'metrics.json'}  figures: {run / 'figures'}  report: {run / 'report.html'}")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="A run directory.")]):
    """One self-contained report.html (figures embedded) for a run."""
    from .report import write_report

    console.print(f"report: {write_report(run)}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the rows as JSON (fractions).")] = None,
):
    """One table of several runs' settings and metrics."""
    from .report import compare_runs

    rows = compare_runs(runs, console)
    if json_path:
        from .runs import write_json

        write_json(json_path, rows if len(rows) > 1 else rows[0])
        console.print(f"json: {json_path}")


@app.command()
def review(
    run: Annotated[Path, typer.Argument(help="A run directory (evaluated).")],
    train_set: Annotated[bool, typer.Option("--train", help="Also review training images (slower: one pass).")] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Apply the saved decisions to the dataset.")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Put back what the last --apply moved.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before moving files.")] = False,
    graphics: Annotated[str, typer.Option("--graphics", help="auto, kitty, sixel, halfcell or unicode.")] = "auto",
):
    """Step through the worst predictions in the terminal: keep, relabel or remove, saved as you go."""
    from . import review as rv

    if apply and undo:
        raise typer.BadParameter("choose one of --apply and --undo")
    if apply:
        rv.apply_decisions(run, console, assume_yes=yes)
    elif undo:
        rv.undo_apply(run, console, assume_yes=yes)
    else:
        rv.run_tui(run, include_train=train_set, graphics=graphics)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    to: Annotated[Optional[Path], typer.Option("--to", help="Path of the learner pickle (.pkl); the bundle goes beside it.",
                                               show_default="models/<run-name>.pkl")] = None,
    which: Annotated[Which, typer.Option("--which", help="Which saved model.")] = Which.last,
):
    """The fastai learner pickle (learn.export) and a pickle-free bundle (safetensors + JSON + ONNX)."""
    from .export import export_run

    export_run(run, to, which=which.value, log=console.print)


@app.command(help="Classify one image or a folder. MODEL is a bundle directory (fast, no pickle, no "
             "torch) or a fastai .pkl learner. " + PICKLE_WARNING)
def predict(
    model: Annotated[Path, typer.Argument(help="Bundle directory or .pkl learner.")],
    target: Annotated[Path, typer.Argument(metavar="IMAGE_OR_DIR", help="An image file or a folder of images.")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes to show per image.")] = 3,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write path, top-k classes and probabilities as CSV.")] = None,
    jsonl: Annotated[Optional[Path], typer.Option("--jsonl", help="Write one JSON object per image.")] = None,
    bs: Annotated[int, typer.Option("--bs", min=1, help="Batch size.")] = 64,
):
    """Classify images."""
    from .predict import predict_path

    predict_path(model, target, top_k=top_k, csv_path=csv_path, jsonl=jsonl, bs=bs, console=console,
                 progress_factory=_progress)


@app.command()
def bench(
    data: DataOpt = None,
    size: Annotated[int, typer.Option("--size", help="Image size.")] = 128,
    bs: Annotated[int, typer.Option("--bs", help="Batch size.")] = 64,
    images: Annotated[int, typer.Option("--images", help="Training images to time on (a class-balanced subset).")] = 1280,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results here.")] = None,
    scale: Annotated[bool, typer.Option("--scale", help="Instead: memory and speed on generated 10k and 100k image datasets.")] = False,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Cold-start runs per model (the best is kept).")] = 3,
    device: DeviceOpt = "auto",
):
    """Speed: model-only ceiling, loaders alone, end-to-end training, predict, cold start; JSON out."""
    from . import bench as b

    if scale:
        b.run_scale(json_path, console=console, device=device)
    else:
        b.run_bench(data, size=size, bs=bs, images=images, json_path=json_path, console=console, device=device,
                    repeats=repeats)


def main(argv: list[str] | None = None) -> int:
    """Entry point: known errors become one line and an exit code; nothing else leaks."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated")
    warnings.filterwarnings("ignore", message=r".*Consider using tensor\.detach\(\) first")
    cmd = typer.main.get_command(app)
    try:
        rc = cmd.main(args=argv, prog_name="python -m app", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except click.exceptions.ClickException as e:
        e.show(file=sys.stderr)
        return e.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return errors.INTERRUPTED
    except AppError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        if os.environ.get("APP_DEBUG"):
            raise
        return e.code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return errors.INTERRUPTED
    except Exception as e:  # a bug: still one line unless asked for the traceback
        if os.environ.get("APP_DEBUG"):
            raise
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [""]
        first = lines[0] if not lines[0].endswith(":") or len(lines) == 1 else f"{lines[0]} {lines[1]}"
        first = first[:300]  # fastai's "Exception occured in `X` ...:" names the callback; the cause follows
        err_console.print(f"[red]internal error:[/] {type(e).__name__}: {escape(first)} (APP_DEBUG=1 shows the traceback)",
                          soft_wrap=True)
        return errors.INTERNAL
