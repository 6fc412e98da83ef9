"""The command line: parse, check, call one library function per command, print where things are.

Heavy libraries (torch, fastai) are imported inside the commands that need them, so `--help`
and bundle `predict` start in well under a second, and mistakes in paths are reported before
those imports. Known failures are one line on stderr with a documented exit code (README, "Exit
codes"); APP_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import errno
import inspect
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .core import errors
from .core.errors import AppError, first_line
from .core.files import os_reason
from .core.paths import console_width, debug, show_progress
from .data.layout import LAYOUTS_HELP
from .training.presets import PRESET_NAMES

# soft_wrap: piped output keeps one line per message instead of wrapping at the width
console = Console(stderr=False, highlight=False, soft_wrap=True, width=console_width(sys.stdout))


err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=console_width(sys.stderr))


app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train, judge and ship an AlexNet image classifier by transfer learning (fastai). "
    "Start with `python -m app train`.",
)


class Loader(str, Enum):
    cached = "cached"
    datablock = "datablock"
    fast = "fast"  # old name of cached
    fastai = "fastai"  # old name of datablock


class Which(str, Enum):
    last = "last"
    best = "best"


class Balance(str, Enum):
    none = "none"
    weights = "weights"
    sampler = "sampler"


class ResizeMethod(str, Enum):
    crop = "crop"
    squish = "squish"
    pad = "pad"


class Split(str, Enum):
    val = "val"
    test = "test"


def _opt(names: str, help: str, default=None, typ=Optional[str], **kw):
    """(annotation, default) of one option, for the option tables below."""
    return Annotated[typ, typer.Option(*names.split(), help=help, **kw)], default


PRESETS_HELP = ", ".join(PRESET_NAMES)
DATA = _opt("--data", f"Dataset root: {LAYOUTS_HELP}.", typ=Optional[Path],
            show_default="../shared/data/imagenette2-224 if present, else download Imagenette")
OUT = _opt("--out", "Run directory to create (must not exist).", typ=Optional[Path], show_default="runs/<command>-<n>")
PRESET = _opt("--preset", f"Named recipe ({PRESETS_HELP}); flags you give override it. auto: cpu-quick on CPU, "
              "gpu-fast on a GPU, cpu-finetune / finetune with pretrained weights.", "auto", typ=str)
SIZE = _opt("--size", "Image size in pixels (>= 64).", typ=Optional[int], show_default="preset's")
BS = _opt("--bs", "Batch size.", typ=Optional[int], show_default="preset's")
SEED = _opt("--seed", "Random seed (CPU runs repeat exactly).", 42, typ=int)
LOADER = _opt("--loader", "cached: decoded cache, batch augmentation on the device; datablock: fastai's stock "
              "DataBlock (fast and fastai are the old names).", typ=Optional[Loader], show_default="preset's (cached)")
DEVICE = _opt("--device", "auto, cpu, cuda or cuda:N.", "auto", typ=str)
EPOCHS = _opt("--epochs", "Epochs.", typ=Optional[int], show_default="preset's")
TIME = _opt("--time", "Minutes for the whole command: this machine's speed is measured and the epochs planned "
            "to fit (0 = the preset's epochs).", typ=Optional[float], min=0.0, show_default="train on a CPU: 15")
TTA = _opt("--tta/--no-tta", "Also score with test-time augmentation.", False, typ=bool)
LABELS = _opt("--labels", "A CSV of fname,label[,is_valid] (fname relative to --data): the classes, and the split "
              "when it has is_valid; several labels per image (';' or '|' between them) make it multi-label.",
              typ=Optional[Path])
VALID_PCT = _opt("--valid-pct", "Validation share where the layout gives no split (drawn file by file, nothing "
                 "copied).", typ=Optional[float], min=0.01, max=0.9, show_default="0.2")
SPLIT_SEED = _opt("--split-seed", "Seed of that draw (the same files every time).", typ=Optional[int],
                  show_default="42")
LAYOUT = _opt("--layout", "How the folders are read: auto (train/, val/, test/ in any case and their usual aliases "
              "are splits), split-folders, or class-folders (every folder is a class, even one named train or test).",
              "auto", typ=str)
LABEL_DELIM = _opt("--label-delim", "A multi-label CSV's delimiter between the labels of an image (found in the file "
                   "when it is ';' or '|'; a space must be given: --label-delim ' ').", typ=Optional[str])
DATASET = {"data": DATA, "labels": LABELS, "valid_pct": VALID_PCT, "split_seed": SPLIT_SEED,
           "layout": LAYOUT, "label_delim": LABEL_DELIM}  # how a dataset is read
BALANCE = _opt("--balance", "Imbalanced classes: none, weights (class weights in the loss) or sampler (fastai's "
               "weighted DataLoader).", typ=Optional[Balance], show_default="none")
RESIZE = _opt("--resize", "How images become square (fastai ResizeMethod): crop (centre), squish, or pad (black "
              "borders); the same in training, evaluation and export.", typ=Optional[ResizeMethod],
              show_default="crop")


PRECISION = _opt("--precision", "fp32, bf16 or auto (a GPU: bf16, fp16 without it; a CPU with native bf16 under "
                 "--time: fp32 and bf16 timed on the run's own model, bf16 when 1.2x faster; else fp32). "
                 "config.json records what ran, the two rates and whether this CPU has native bf16.", typ=Optional[str],
                 show_default="auto")


TRACK = _opt("--track", "Also log the run to tensorboard, mlflow and/or wandb (repeat, or comma separated; none: "
             "off): TensorBoard event files in RUN/tensorboard, MLflow in runs/mlflow.db (or MLFLOW_TRACKING_URI), "
             "W&B offline in RUN/wandb (WANDB_MODE=online to upload). --resume continues the same tracker runs.",
             typ=Optional[list[str]], show_default="APP_TRACK, else none")
CONFIG = _opt("--config", "Settings from a file: a run's config.json (the same recipe again) or a YAML file with "
              "the options' names as keys (lr: 1e-3, size: 64, ...); options typed beside it win.", typ=Optional[Path])


def _weights(default: str):
    return _opt("--weights", "imagenet (torchvision's file: hub cache, else download), auto (imagenet when it can "
                "be had, else random init), none (random init), a torchvision AlexNet state dict (.pth) or an "
                "exported bundle directory.", typ=Optional[str], show_default=default)


TRAINING = {  # the options fit-one-cycle and fine-tune share
    **DATASET, "balance": BALANCE, "resize": RESIZE, "epochs": EPOCHS, "time": TIME,
    "lr": _opt("--lr", "Maximum learning rate.", typ=Optional[float], show_default="preset's"),
    "lr_from": _opt("--lr-from", "Take --lr from this lr-find run's recommendation.", typ=Optional[Path]),
    "size": SIZE, "bs": BS, "out": OUT, "preset": PRESET, "loader": LOADER, "seed": SEED, "device": DEVICE,
    "precision": PRECISION,
    "resume": _opt("--resume", "Continue this run from its last finished epoch, with its saved settings.",
                   typ=Optional[Path]),
    "compile": _opt("--compile/--no-compile", "torch.compile the model (in place).", typ=Optional[bool],
                    show_default="preset's (off)"),
    "progressive": _opt("--progressive", "Progressive resizing before --size: SIZE:FRACTION of the epochs, comma "
                        "separated (e.g. 64:0.35,96:0.41), or none.", show_default="preset's, scaled to --size"),
    "valid_every": _opt("--valid-every", "Validate every N epochs (always at each image size's last epoch and the "
                        "last epoch); 1 = every epoch.", typ=Optional[int], min=1, show_default="preset's"),
    "test_scale": _opt("--test-scale", "Validate, evaluate and export at up to --size x this (1 to 1.25; a multiple of "
                       "32, where AlexNet's pools cover the image): random crops zoom in, so whole images are "
                       "seen best a little larger (FixRes).", typ=Optional[float],
                       show_default="preset's"),
    "clip": _opt("--clip", "Clip the gradient norm to this (fastai GradientClip); 0 = off.", typ=Optional[float],
                 min=0.0, show_default="preset's"),
    "mixup": _opt("--mixup", "fastai MixUp with this alpha; 0 = off.", typ=Optional[float], min=0.0,
                  show_default="preset's"),
    "body_layers": _opt("--body-layers", "Pretrained weights: keep only the first N of AlexNet's 5 convolutions, the "
                        "rest random (a source trained on few or other classes transfers its early layers best); "
                        "0 = all.", typ=Optional[int], min=0, max=5, show_default="all"),
    "workers": _opt("--workers", "Worker processes of the datablock loader.", typ=Optional[int], min=0,
                    show_default="fastai's"),
    "evaluate": _opt("--evaluate/--no-evaluate", "Metrics, figures and report when training ends.", True, typ=bool),
    "figures": _opt("--figures/--no-figures", "With the evaluation: every figure and the report (--no-figures: the "
                    "metrics only, seconds sooner; `evaluate RUN` draws them later).", True, typ=bool),
    "tta": TTA,
    "export": _opt("--export/--no-export", "Export the model when training ends.", False, typ=bool),
    "track": TRACK,
}


FINISH = ("evaluate", "tta", "export", "figures")


def _command(name: str, options: dict, help: str):
    """Register `fn(**options)` as command `name`, its options given as a table (defined once)."""
    def register(fn):
        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                   for k, (a, d) in options.items()]

        def command(ctx, **kw):
            return fn(**kw, **({"ctx": ctx} if "ctx" in inspect.signature(fn).parameters else {}))

        command.__signature__ = inspect.Signature(params)
        command.__name__, command.__doc__ = fn.__name__, help
        app.command(name)(command)
        return fn
    return register


def _progress():
    """The command's one live display (bars on a terminal only; see app/core/progress.py). It is
    drawn on the console that prints the command's lines: rich writes another console's output
    past the live display, which leaves each line glued to a half-drawn bar."""
    from .core.progress import make_progress

    return make_progress(console, show_progress(sys.stdout))


def _values(flags: dict) -> dict:
    """Typed choices (enums) as their values; everything else as typed."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in flags.items()}


def _dataset_args(flags: dict) -> dict:
    return {"labels": flags.get("labels"), "valid_pct": flags.get("valid_pct") or 0.2,
            "split_seed": 42 if flags.get("split_seed") is None else flags["split_seed"],
            "layout": flags.get("layout") or "auto", "label_delim": flags.get("label_delim")}


def _typed(ctx, values: dict) -> dict:
    """Only the options typed on the command line (with --config, the file gives the others)."""
    return {k: v for k, v in values.items() if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") != "DEFAULT"}


def _train(command: str, preset: str, weights, out, resume, **flags) -> Path:
    from .training.precheck import precheck

    flags = _values(flags)
    precheck(out=out, resume=resume, weights=weights, data=flags.get("data"), export=flags.get("export", False),
             track=flags.get("track"), **_dataset_args(flags))
    from .training.after_fit import Finish
    from .training.train import run_command

    finish = Finish(**{k: flags.pop(k) for k in FINISH})
    with _progress() as progress:
        run = run_command(command, preset, weights, out=out, resume=resume, finish=finish, console=console,
                          progress=progress, **flags)
    console.print(f"run: {run}")
    return run


@app.command()
def data(
    root: Annotated[Path, typer.Argument(help=f"Dataset root: {LAYOUTS_HELP}.")],
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Decode every image to find bad files.")] = True,
    labels: LABELS[0] = None,
    valid_pct: VALID_PCT[0] = None,
    split_seed: SPLIT_SEED[0] = None,
    layout: LAYOUT[0] = "auto",
    label_delim: LABEL_DELIM[0] = None,
):
    """What is in a dataset: its layout, classes (folder + human name), counts per split, the imbalance,
    folders ignored, files that cannot be used."""
    from .data.describe import describe

    args = _dataset_args({"labels": labels, "valid_pct": valid_pct, "split_seed": split_seed, "layout": layout,
                          "label_delim": label_delim})
    with _progress() as progress:
        describe(root, console, verify=verify, progress=progress, **args)


@_command("lr-find", {**DATASET, "size": SIZE, "bs": BS, "weights": _weights("none"), "out": OUT,
                      "preset": PRESET, "loader": LOADER, "seed": SEED, "device": DEVICE, "track": TRACK},
          help="fastai lr_find: the four suggestions (valley, slide, minimum, steep), a recommended lr, the plot.")
def lr_find_cmd(weights, out, preset, **flags):
    from .training.precheck import precheck

    flags = _values(flags)
    precheck(out=out, weights=weights, data=flags.get("data"), track=flags.get("track"), **_dataset_args(flags))
    from .training.lr_find import run_lr_find

    with _progress() as progress:
        run = run_lr_find(preset, weights, out=out, console=console, progress=progress, **flags)
    from .evaluation.figures import figure_path

    console.print(f"run: {run}\nplot: {figure_path(run, 'lr_find')}")


@_command("fit-one-cycle", {**TRAINING, "weights": _weights("none")},
          help="fastai fit_one_cycle on the whole model (from random init by default).")
def fit_one_cycle_cmd(preset, weights, out, resume, loader, **flags):
    _train("fit-one-cycle", preset, weights or "none", out, resume, **_values({"loader": loader, **flags}))


@_command("fine-tune", {**TRAINING, "weights": _weights("imagenet"),
                        "freeze_epochs": _opt("--freeze-epochs", "Epochs with the body frozen.", typ=Optional[int],
                                              show_default="preset's"),
                        "min_freeze_steps": _opt("--min-freeze-steps", "The frozen phase runs at least this many "
                                                 "optimizer steps (small datasets).", typ=Optional[int], min=0,
                                                 show_default="preset's")},
          help="fastai fine_tune: body frozen for --freeze-epochs, then all layers with discriminative lrs "
               "(ImageNet weights by default).")
def fine_tune_cmd(preset, weights, out, resume, loader, **flags):
    _train("fine-tune", preset, weights or "imagenet", out, resume, **_values({"loader": loader, **flags}))


@_command("train", {**DATASET, "balance": BALANCE, "resize": RESIZE, "weights": _weights("auto"), "out": OUT,
                    "preset": PRESET, "epochs": EPOCHS, "time": TIME, "seed": SEED, "device": DEVICE,
                    "precision": PRECISION, "tta": TTA, "track": TRACK, "config": CONFIG},
          help="The main job: the recipe for this machine and these weights (ImageNet when it can be had), "
               "evaluation, report and export, within --time minutes. --config RUN/config.json trains that "
               "run's recipe again (on a CPU, the same weights bit for bit).")
def train_cmd(ctx, weights, out, preset, tta, config, **flags):
    if config:  # the file's settings, as if typed, under the options typed beside it
        from .training.presets import with_settings_file

        typed = _typed(ctx, {"weights": weights, "preset": preset, "tta": tta, **_values(flags)})
        flags = with_settings_file(config, typed)
        weights, preset, tta = flags.pop("weights", None), flags.pop("preset", "auto"), flags.pop("tta", False)
        for k in ("export", "evaluate", "figures"):  # train always evaluates, draws and exports
            flags.pop(k, None)
    run = _train("train", preset, weights or "auto", out, None, evaluate=True, tta=tta, export=True, figures=True,
                 **flags)
    from .core.files import read_json

    m = read_json(run / "metrics.json")
    console.print(f"[bold]accuracy {m['accuracy'] * 100:.2f}%[/]  metrics: {run / 'metrics.json'}  "
                  f"figures: {run / 'figures'}  report: {run / 'report.html'}")


MOVED_DATA = Annotated[Optional[Path], typer.Option("--data", help="The run's dataset, if it moved since training.")]
MOVED_LABELS = Annotated[Optional[Path], typer.Option("--labels", help="The run's labels CSV, if it moved (a CSV "
                                                      "inside the dataset moves with --data).")]


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    tta: Annotated[bool, typer.Option("--tta/--no-tta", help="Also score with test-time augmentation.")] = False,
    which: Annotated[Which, typer.Option("--which", help="Which saved model.")] = Which.last,
    data: MOVED_DATA = None,
    labels: MOVED_LABELS = None,
    split: Annotated[Split, typer.Option("--split", help="val, or test: the layout's test/ split (never used to "
                                         "choose a model), written beside the validation results.")] = Split.val,
):
    """Metrics (scikit-learn), confusion matrix, most confused, top losses and all figures for a run."""
    from .evaluation.evaluate import evaluate_run

    with _progress() as progress:
        evaluate_run(run, tta=tta, which=which.value, data=str(data) if data else None, console=console,
                     progress=progress, split=split.value, labels=str(labels) if labels else None)
    suffix = "" if split == Split.val else f"_{split.value}"
    console.print(f"metrics: {run / f'metrics{suffix}.json'}  figures: {run / 'figures'}  report: {run / 'report.html'}")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="A run directory.")]):
    """One self-contained report.html (figures embedded) for a run."""
    from .evaluation.report import write_report

    console.print(f"report: {write_report(run)}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the rows as JSON (fractions).")] = None,
):
    """One table of several runs' settings and metrics."""
    from .evaluation.compare import compare_runs

    compare_runs(runs, console, json_path=json_path)
    if json_path:
        console.print(f"json: {json_path}")


A_FOLDS = Annotated[int, typer.Option("--folds", help="K of the K-fold cross-validation that scores every "
                                      "training image with a model that never saw it (each fold trains the recipe "
                                      "once).")]
A_TIME = Annotated[Optional[float], typer.Option("--time", min=0.0, help="Minutes for the whole audit, shared by the "
                                                 "folds (each a `--time` run with train's keeper); 0: every fold runs "
                                                 "the recipe's epochs.", show_default="on a CPU: 30")]
A_DATA_ONLY = " (a dataset only; a run brings its own.)"


@app.command()
def audit(
    target: Annotated[Path, typer.Argument(metavar="RUN_OR_DATA", help="A trained run, or a dataset folder "
                                           f"({LAYOUTS_HELP}).")],
    folds: A_FOLDS = 4,
    time: A_TIME = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Each fold's epochs instead of a time "
                                                  "budget.", show_default="the recipe's, or planned by --time")] = None,
    out: OUT[0] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="The folds' weights" + A_DATA_ONLY,
                                                   show_default="auto")] = None,
    preset: Annotated[str, typer.Option("--preset", help="The folds' recipe" + A_DATA_ONLY)] = "auto",
    device: DEVICE[0] = "auto",
    labels: LABELS[0] = None,
    valid_pct: VALID_PCT[0] = None,
    split_seed: SPLIT_SEED[0] = None,
):
    """Which labels look wrong (cleanlab, out of sample), which validation images leak from training, near
    duplicates and low-quality images: audit.csv, figures and a report; the dataset is only read."""
    from .audit.audit import check_target

    check_target(target, out)
    from .audit.main import run_audit

    dataset = {"labels": labels, "valid_pct": valid_pct, "split_seed": split_seed}
    with _progress() as progress:
        run_audit(target, folds=folds, minutes=time, out=out, weights=weights, preset=preset, device=device,
                  dataset=dataset, console=console, progress=progress, epochs=epochs)


@app.command()
def review(
    run: Annotated[Path, typer.Argument(help="A run directory (evaluated).")],
    train_set: Annotated[bool, typer.Option("--train", help="Also review training images (slower: one pass).")] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Apply the saved decisions to the dataset.")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Put back what the last --apply moved.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before moving files.")] = False,
    graphics: Annotated[str, typer.Option("--graphics", help="auto, kitty, sixel, halfcell or unicode.")] = "auto",
    data: MOVED_DATA = None,
    labels: MOVED_LABELS = None,
    audit_found: Annotated[bool, typer.Option("--audit", help="Step through what `audit` found instead (RUN is an "
                                              "audit folder): label issues worst first, then leakage pairs side by "
                                              "side.")] = False,
):
    """Step through the worst predictions in the terminal: keep, relabel or remove, saved as you go; `c` shows
    where the model looked (Grad-CAM)."""
    if apply and undo:
        raise typer.BadParameter("choose one of --apply and --undo")
    from .data.edits import apply_decisions, undo_apply
    from .evaluation.review import run_tui

    moved = {"data": data, "labels": labels}
    if apply:
        apply_decisions(run, console, assume_yes=yes, **moved)
    elif undo:
        undo_apply(run, console, assume_yes=yes, **moved)
    else:
        run_tui(run, include_train=train_set, graphics=graphics, audit=audit_found, **moved)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    to: Annotated[Optional[Path], typer.Option("--to", help="Path of the learner pickle (.pkl); the bundle goes beside it.",
                                               show_default="RUN/export/<run-name>.pkl")] = None,
    which: Annotated[Which, typer.Option("--which", help="Which saved model.")] = Which.last,
    formats: Annotated[str, typer.Option("--format", help="Model files in the bundle, comma separated: onnx, "
                                         "onnx-int8, openvino, coreml, pt2 (each checked against PyTorch).")] = "onnx",
):
    """The fastai learner pickle (learn.export, loads in any notebook) and a pickle-free bundle (safetensors + JSON + ONNX)."""
    from .shipping.export import export_run

    export_run(run, to, which=which.value, log=console.print, formats=formats.split(","))


PICKLE_WARNING = ("A .pkl learner is a Python pickle: loading it runs code from the file. Only load "
                  "pickles you made or trust; a bundle directory needs no pickle.")


@app.command(help="Classify one image or a folder. MODEL is a bundle directory (fast, no pickle, no "
             "torch) or a fastai .pkl learner. " + PICKLE_WARNING)
def predict(
    model: Annotated[Path, typer.Argument(help="Bundle directory or .pkl learner.")],
    target: Annotated[Path, typer.Argument(metavar="IMAGE_OR_DIR", help="An image file or a folder of images.")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes to show per image.")] = 3,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write path, top-k classes and probabilities as CSV.")] = None,
    jsonl: Annotated[Optional[Path], typer.Option("--jsonl", help="Write one JSON object per image.")] = None,
    bs: Annotated[int, typer.Option("--bs", min=1, help="Batch size.")] = 64,
    calibrated: Annotated[bool, typer.Option("--calibrated", help="Temperature-scaled probabilities (the "
                                             "temperature fitted on the validation logits, stored by export).")] = False,
    min_confidence: Annotated[Optional[float], typer.Option("--min-confidence", min=0.0, max=1.0, help="Predict "
                                                            "`unknown` where the top probability is below this "
                                                            "(a `prediction` column in --csv and --jsonl).")] = None,
    cam: Annotated[Optional[Path], typer.Option("--cam", help="Write one Grad-CAM overlay per image into this new "
                                                "(or empty) folder; needs torch and pip install .[audit].")] = None,
):
    """Classify images."""
    from .shipping.predict import predict_path

    predict_path(model, target, top_k=top_k, csv_path=csv_path, jsonl=jsonl, bs=bs, console=console,
                 progress_factory=_progress, calibrate=calibrated, min_confidence=min_confidence, cam_dir=cam)


S_FORMAT = Annotated[str, typer.Option("--format", help="The bundle's model file to serve: onnx, onnx-int8 or "
                                      "openvino (torch-free runtimes).")]
S_LIMITS = {"max_mb": ("--max-mb", "Largest request body, MB (bigger: 413, unread).", 20.0),
            "max_batch": ("--max-batch", "Images run through the model together (and per request).", 32),
            "max_wait_ms": ("--max-wait-ms", "How long a request waits for others to batch with.", 5.0),
            "queue": ("--queue", "Requests that may wait for the model (more: 503).", 64),
            "timeout": ("--timeout", "Seconds a client has for its headers and again for its body (else 408).", 10.0),
            "top_k": ("--top-k", "Classes per image unless the request asks (?top_k=N).", 3)}


@_command("serve", {"bundle": (Annotated[Path, typer.Argument(help="An exported bundle directory.")], inspect.Parameter.empty),
                    "host": _opt("--host", "Address to listen on.", "127.0.0.1", typ=str),
                    "port": _opt("--port", "Port to listen on (0: any free one).", 8000, typ=int, min=0, max=65535),
                    "fmt": (S_FORMAT, "onnx"),
                    **{k: _opt(n, h, d, typ=type(d), min=1 if isinstance(d, int) else 0.001)
                       for k, (n, h, d) in S_LIMITS.items()}},
          help="An HTTP server on a bundle, torch-free: POST /predict (an image as the body, or several as multipart "
               "files) answers the top-k as JSON; GET /health, GET /model. Bad requests get a 4xx and one line of "
               "JSON; Ctrl-C stops it.")
def serve_cmd(bundle, host, port, fmt, **limits):
    from .shipping.serve import Limits, serve_bundle

    serve_bundle(bundle, host=host, port=port, fmt=fmt, limits=Limits(**limits), log=console.print)


# bench's options that take more than a line (the command itself stays one screen)
B_SCRATCH_RUN = Annotated[Optional[Path], typer.Option("--scratch-run", help="--transfer main-job: take the "
                                                       "from-scratch arm from this finished `train --weights none "
                                                       "--time MINUTES` run of this host instead of training it again.")]
B_IMAGES = Annotated[Optional[int], typer.Option("--images", min=1, help="Training images to time on (a "
                                                  "class-balanced subset).", show_default="1280; 2000 for "
                                                  "--bf16-accuracy")]
B_TRANSFER = Annotated[bool, typer.Option("--transfer", help="Instead: fine-tune from a source model trained here "
                                           "(the stand-in for ImageNet weights) vs training from scratch, at "
                                           "several images per class and as the main job.")]
B_BUDGET = Annotated[Optional[float], typer.Option("--budget", min=1.0, help="Instead: our recipe vs fastai's "
                                                    "defaults, each given these minutes, on Imagenette and a "
                                                    "generated dataset unlike it (with --data: that dataset "
                                                    "alone).")]
B_KEEP = Annotated[Optional[float], typer.Option("--keep", min=1.0, help="Instead: `train --time MINUTES` as a "
                                                  "user runs it, on this host idle and again with one core "
                                                  "loaded for a minute mid-run: does it end within its budget?")]
B_BF16 = Annotated[bool, typer.Option("--bf16", help="Instead: fp32 vs bf16 on the CPU, model-only and end to "
                                       "end with the main job's recipe, interleaved rounds (the first is a warm-up), "
                                       "and where the loader's milliseconds go.")]
B_MULTI_LABEL = Annotated[Optional[float], typer.Option("--multi-label", min=1.0, help="Instead: multi-label "
                                                         "training on collages of two Imagenette images, our recipe "
                                                         "vs fastai's default multi-label one, MINUTES each.")]
B_SCAN = Annotated[bool, typer.Option("--scan", help="Instead: the first scan of a dataset (headers, the decoded "
                                       "cache's one decode, a full check, a warm re-scan) on Imagenette and Tiny "
                                       "ImageNet (with --data: that dataset).")]
B_PRECISION_BUDGET = Annotated[Optional[float], typer.Option("--precision-budget", min=1.0, help="Instead: the main "
                                                              "job (train --time MINUTES) in fp32 and in bf16, "
                                                              "--seeds seeds each, at equal budget.")]
B_BF16_ACCURACY = Annotated[bool, typer.Option("--bf16-accuracy", help="Instead: fp32 vs bf16 accuracy at equal "
                                                "--epochs, --seeds seeds, on --images training images.")]
B_SEEDS = Annotated[int, typer.Option("--seeds", min=1, help="--bf16-accuracy: seeds per precision; --transfer: "
                                       "draws (seeds) per K.")]
B_EPOCHS = Annotated[Optional[int], typer.Option("--epochs", min=1, help="--bf16-accuracy: epochs per run; "
                                                  "--transfer: every arm's epochs (at least 2).",
                                                  show_default="12")]
B_REPEATS = Annotated[int, typer.Option("--repeats", min=1, help="Timing rounds (the best is kept; --bf16: "
                                         "the median of these, after a warm-up round).")]
B_SOURCE_DATA = Annotated[Optional[Path], typer.Option(
        "--source-data", help="--transfer: the many-class dataset the source model is trained on (train/<class>/, "
        "val/<class>/).", show_default="../shared/data/tiny-imagenet-200-64")]
B_PARTS = Annotated[str, typer.Option("--parts", help="--transfer: what to run, of source (only build or find the "
                                       "cached source), arms (K images per class) and main-job (train both ways "
                                       "under --minutes); parts not run keep their results in --json.")]
B_KS = Annotated[str, typer.Option("--ks", help="--transfer: training images per class of the arms ('all': "
                                    "every one, one seed).")]
B_SOURCE_EPOCHS = Annotated[Optional[int], typer.Option("--source-epochs", min=1, help="--transfer: the source's "
                                                         "epochs (another recipe: another cached source).",
                                                         show_default="the recipe's")]
B_BODY_LAYERS = Annotated[Optional[list[int]], typer.Option("--body-layers", min=1, max=5, help="--transfer: also "
                                                             "an arm fine-tuning only the source's first N "
                                                             "convolutions (repeatable).")]

B_EXPORT = Annotated[Optional[Path], typer.Option("--export", help="Instead: export this run in every format that "
                                                   "runs here and time each (load, batch-1 latency, batch-32 "
                                                   "throughput) beside torch eager.")]
B_SERVE = Annotated[Optional[Path], typer.Option("--serve", help="Instead: `serve` this bundle and load it with "
                                                  "--clients concurrent clients for --seconds.")]
B_TEST_SIZES = Annotated[Optional[Path], typer.Option("--test-sizes", help="Instead: score this run's model on its "
                                                      "validation set at its training size and every test size up "
                                                      "to 1.25x it (what --test-scale is worth).")]
B_CLIENTS = Annotated[int, typer.Option("--clients", min=1, help="--serve: concurrent clients.")]
B_SECONDS = Annotated[float, typer.Option("--seconds", min=1.0, help="--serve: how long they send.")]


B_AUDIT = Annotated[bool, typer.Option("--audit", help="Instead: planted label noise (5 % of the training labels "
                                       "changed) and 20 planted train/validation copies, found by `audit RUN --time "
                                       "--audit-minutes` against the final model's training losses (`train --time "
                                       "--minutes`); calibration before/after temperature scaling; Grad-CAM on squares.")]
B_AUDIT_MINUTES = Annotated[float, typer.Option("--audit-minutes", min=1.0, help="--audit: the audit's --time.")]
B_FOLDS = Annotated[int, typer.Option("--folds", min=2, help="--audit: the audit's --folds.")]
B_PER_CLASS = Annotated[Optional[int], typer.Option("--per-class", min=2, help="--audit: training images per class "
                                                    "(a smaller run to try it; validation: a third as many).",
                                                    show_default="all")]


@app.command()
def bench(
    data: DATA[0] = None,
    size: Annotated[int, typer.Option("--size", help="Image size.")] = 128,
    bs: Annotated[int, typer.Option("--bs", help="Batch size.")] = 64,
    images: B_IMAGES = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results here.")] = None,
    scale: Annotated[bool, typer.Option("--scale", help="Instead: memory and speed on generated 10k and 100k image datasets.")] = False,
    transfer: B_TRANSFER = False,
    budget: B_BUDGET = None,
    keep: B_KEEP = None,
    bf16: B_BF16 = False,
    bf16_accuracy: B_BF16_ACCURACY = False,
    multi_label: B_MULTI_LABEL = None,
    scan: B_SCAN = False,
    precision_budget: B_PRECISION_BUDGET = None,
    seeds: B_SEEDS = 3,
    epochs: B_EPOCHS = None,
    repeats: B_REPEATS = 3,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="Also time training with torch.compile.")] = False,
    device: DEVICE[0] = "auto",
    source_data: B_SOURCE_DATA = None,
    parts: B_PARTS = "arms,main-job",
    ks: B_KS = "10,25,100,all",
    source_epochs: B_SOURCE_EPOCHS = None,
    minutes: Annotated[float, typer.Option("--minutes", min=1.0, help="--transfer: the main job's --time; --audit: "
                                           "the final model's.")] = 15.0,
    body_layers: B_BODY_LAYERS = None,
    scratch_run: B_SCRATCH_RUN = None,
    export: B_EXPORT = None,
    serve: B_SERVE = None,
    test_sizes: B_TEST_SIZES = None,
    clients: B_CLIENTS = 8,
    seconds: B_SECONDS = 30.0,
    audit: B_AUDIT = False,
    audit_minutes: B_AUDIT_MINUTES = 30.0,
    folds: B_FOLDS = 4,
    per_class: B_PER_CLASS = None,
):
    """Speed: model-only ceiling, loaders alone, end-to-end training, predict, cold start; JSON out."""
    from .bench.main import run

    opts = dict(source_data=source_data, parts=tuple(parts.split(",")), ks=ks, seeds=seeds, epochs=epochs,
                source_epochs=source_epochs, minutes=minutes, body_layers=tuple(body_layers or ()),
                scratch_run=scratch_run)
    audit_opts = dict(final_minutes=minutes, audit_minutes=audit_minutes, folds=folds, per_class=per_class,
                      val_per_class=per_class and max(2, per_class // 3))
    run(data=data, size=size, bs=bs, images=images, json_path=json_path, console=console, device=device,
        repeats=repeats, scale=scale, transfer=transfer, budget=budget, compile=compile, bf16=bf16,
        bf16_accuracy=bf16_accuracy, keep=keep, seeds=seeds, epochs=epochs, transfer_options=opts, scan=scan,
        precision_budget=precision_budget, export=export, serve=serve, clients=clients, seconds=seconds,
        audit=audit, audit_options=audit_opts, multi_label=multi_label, test_sizes=test_sizes)


def main(argv: list[str] | None = None) -> int:
    """Entry point: known errors become one line and an exit code; nothing else leaks."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated")
    warnings.filterwarnings("ignore", message=r".*Consider using tensor\.detach\(\) first")
    from .core.host import command_started

    command_started()  # the time budget counts from here (from the process's start for its first command)
    cmd = typer.main.get_command(app)
    usage_error = _click_errors()
    prog = Path(sys.argv[0]).name if not sys.argv[0].endswith(("__main__.py", "-c")) else "python -m app"
    try:
        rc = cmd.main(args=argv, prog_name=prog, standalone_mode=False)
        return rc if isinstance(rc, int) else errors.OK
    except usage_error as e:
        e.show(file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return errors.INTERRUPTED
    except AppError as e:
        err_console.print(f"[red]error:[/] {escape(getattr(e, 'message', str(e)))}", soft_wrap=True)
        if debug():
            raise
        return e.code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return errors.INTERRUPTED
    except OSError as e:
        if debug() or e.errno not in UNWRITABLE:
            return _internal(e)
        where = f" ({e.filename})" if e.filename else ""
        err_console.print(f"[red]error:[/] {os_reason(e)}{escape(where)}", soft_wrap=True)
        return errors.RUN
    except Exception as e:  # a bug: still one line unless asked for the traceback
        return _internal(e)


def _click_errors():
    """The exceptions of the click that typer runs: typer 0.29 carries its own copy (typer._click), whose
    usage errors are not the installed click's (they were reported as internal errors)."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException
    return ClickException


# A full disk, a read-only file system, no permission: the machine's state, not a bug (exit 5).
UNWRITABLE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def _internal(e: Exception) -> int:
    if debug():
        raise e
    err_console.print(f"[red]internal error:[/] {type(e).__name__}: {escape(first_line(e, 300))} "
                      "(APP_DEBUG=1 shows the traceback)", soft_wrap=True)
    return errors.INTERNAL
