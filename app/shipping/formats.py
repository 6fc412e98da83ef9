"""The export formats: one table (FORMATS), each row the file it writes into the bundle, the
library that writes it, the runtime that reads it and whether that runtime runs here, and how the
file is written, loaded and checked.

Every file is checked after writing, in its own runtime, against the torch model: 32 validation
images go through the bundle's own preprocessing (model.json as written, read back by read_meta:
a wrong mean there fails the check) and the torch model gets them through training's
normalisation. Float formats: max |Δprob| <= FLOAT_TOLERANCE. int8: top-1 agreement and accuracy
on the whole validation set, refused when accuracy drops more than INT8_MAX_DROP points. Core ML
cannot run off Apple systems: its spec is read back and every weight in it compared with torch's.

Loading (`load_runner`) imports torch only for pt2: `serve` and bundle `predict` stay torch-free.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ModelError, RunError, UsageError, first_line
from ..model.bundle import label_thresholds, read_meta, softmax, to_input

FLOAT_TOLERANCE = 1e-3  # max |Δprob| between a float format and torch on the check images
INT8_MAX_DROP = 1.0  # accuracy points an int8 model may lose on the validation set
CHECK_IMAGES = 32
CALIBRATION_IMAGES = 256  # training images int8's static quantization calibrates on
OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO's CPU plugin runs bf16 where the CPU has it
ONNX_OPSET = 17
# Largest |logit difference| between model.onnx and PyTorch on the sample images that an export
# accepts (float32 through two runtimes differs by ~1e-6 here; a wrong graph by far more).
ONNX_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Format:
    name: str
    file: str  # in the bundle
    writer: str  # the library that writes it
    runtime: str  # what reads it
    kind: str  # float (Δprob check), int8 (accuracy check) or spec (cannot run here: spec and weights)
    needs: tuple[str, ...]  # modules the writer imports (an extra when not base)
    write: Callable  # (ctx) -> what the writer itself checked, or None
    load: Callable | None  # (bundle) -> logits(x); None where it cannot run
    versions: Callable  # () -> {library: version} of what wrote it and reads it
    reader: str  # the module of the runtime (what `serve` reports)
    extra_files: tuple[str, ...] = ()
    weight_copies: float = 1.0  # disk space, in copies of the weights


def runs_here(fmt: Format) -> bool:
    return fmt.load is not None


def format_table() -> list[dict]:
    """The table as rows (README, --help, bench)."""
    return [{"format": f.name, "file": f.file, "written by": f.writer, "runs on": f.runtime,
             "runs here": "yes" if runs_here(f) else "no (macOS / iOS only)"} for f in FORMATS]


def parse_formats(names) -> tuple[str, ...]:
    """`--format onnx,openvino`: known names, the bundle's model.onnx always first; the extras they
    need installed, or one line saying which."""
    names = [n.strip().lower() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UsageError(f"unknown export format {', '.join(unknown)}: choose from {', '.join(BY_NAME)}")
    chosen = ["onnx"] + [n for n in dict.fromkeys(names) if n != "onnx"]
    for n in chosen:
        need(f"--format {n}", *BY_NAME[n].needs)
    return tuple(chosen)


def need(what: str, *modules: str) -> None:
    """One line naming the extra when `modules` are not installed (they come with .[ship])."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{what} needs {', '.join(missing)}: pip install .[ship]")


@dataclass
class Context:
    """What a writer and a check need: the torch model, the bundle being written, images."""

    model: object
    bundle: Path
    ds: object
    size: int
    resize: str
    mean: list
    std: list  # training's normalisation: the torch reference's inputs
    cache: dict = field(default_factory=dict)

    def arrays(self, split: str, n: int | None = None) -> list[np.ndarray]:
        """`n` images of `split` spread over it (decoded as predict decodes them), read once."""
        if (split, n) not in self.cache:
            self.cache[split, n] = image_arrays(self.ds, split, self.size, self.resize, n)
        return self.cache[split, n]


def image_arrays(ds, split: str, size: int, resize: str = "crop", n: int | None = None) -> list[np.ndarray]:
    """Up to `n` readable images of `split`, spread evenly over it (every class), decoded as
    `predict` decodes them: (size, size, 3) uint8."""
    items = [i for i in ds.items if i.split == split]
    step = max(1, len(items) // n) if n else 1
    arrays, _ = load_arrays(items[::step][:n] if n else items, size, resize)
    if not arrays:
        raise RunError(f"no readable {split} image in {ds.root} to check the export on")
    return arrays


def load_arrays(items, size: int, resize: str) -> tuple[list[np.ndarray], list]:
    """The items that decode, as arrays, in threads (Pillow releases the GIL); the rest skipped."""
    from concurrent.futures import ThreadPoolExecutor

    from ..data.images import BadImage, load_square

    def load(it):
        try:
            return it, load_square(it.path, size, resize)
        except BadImage:
            return it, None

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        done = [(it, a) for it, a in pool.map(load, items) if a is not None]
    return [a for _, a in done], [it for it, _ in done]


# ---- writers ---------------------------------------------------------------------------------


def export_onnx(model, size: int, path: Path, x: np.ndarray) -> float:
    """ONNX with a dynamic batch axis; returns the max |logit difference| vs PyTorch on `x`, refused
    above ONNX_TOLERANCE."""
    import onnx
    import torch

    from ..model.bundle import onnx_session

    dummy = torch.zeros(2, 3, size, size)
    torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))
    got = onnx_session(path).run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max())
    if not diff <= ONNX_TOLERANCE:  # NaN included
        raise ModelError(f"the ONNX model's logits differ from PyTorch's by {diff:.3g} (more than {ONNX_TOLERANCE:g}) "
                         f"on {len(x)} validation images; nothing was exported")
    return diff


def _write_onnx(ctx: Context) -> dict:
    """torch.onnx's file, its logits checked against torch's on the same inputs (export_onnx)."""
    return {"max_abs_dlogit": export_onnx(ctx.model, ctx.size, ctx.bundle / "model.onnx",
                                          to_input(ctx.arrays("val", CHECK_IMAGES), ctx.mean, ctx.std))}


def _write_int8(ctx: Context) -> None:
    """onnxruntime's static quantization (QDQ, uint8 activations, per-channel int8 weights),
    calibrated (MinMax) on training images through the bundle's preprocessing. Weights use 7 bits
    (reduce_range): CPUs without VNNI (AVX2, AVX-512 before VNNI) saturate u8 x s8 sums, which
    cost the test model 4.5 points on an AVX2-only host where 7 bits cost 2.3 (README, Export)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = read_meta(ctx.bundle)
    x = to_input(ctx.arrays("train", CALIBRATION_IMAGES), meta["normalize"]["mean"], meta["normalize"]["std"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x[i : i + 32]} for i in range(0, len(x), 32)])

        def get_next(self):
            return next(self.batches, None)

    pre = ctx.bundle / ".model.pre.onnx"
    logging.disable(logging.WARNING)  # "Axis 1 is out-of-range for weight" of each 1-D BatchNorm: per-tensor there
    try:
        quant_pre_process(str(ctx.bundle / "model.onnx"), str(pre))
        quantize_static(str(pre), str(ctx.bundle / "model.int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=True)
    finally:
        logging.disable(logging.NOTSET)
        pre.unlink(missing_ok=True)


def _write_openvino(ctx: Context) -> None:
    """OpenVINO IR from the bundle's ONNX, weights kept fp32 (save_model would halve them to fp16)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(ctx.bundle / "model.onnx")), str(ctx.bundle / "model.xml"),
                  compress_to_fp16=False)


def _write_coreml(ctx: Context) -> None:
    """An ML program (fp32, batch 1 to 1024) converted from the traced model by coremltools."""
    import torch

    ct = _coremltools()
    dummy = torch.zeros(1, 3, ctx.size, ctx.size)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ctx.model, dummy)
        shape = (ct.RangeDim(1, 1024, default=1), 3, ctx.size, ctx.size)
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=shape)],
                             outputs=[ct.TensorType(name="logits")], convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.macOS13)
        mlmodel.save(str(ctx.bundle / "model.mlpackage"))


def _write_pt2(ctx: Context) -> None:
    """torch.export's program (ExportedProgram, dynamic batch), saved with torch.export.save."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(ctx.model, (torch.zeros(2, 3, ctx.size, ctx.size),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(ctx.bundle / "model.pt2"))


# ---- runtimes ---------------------------------------------------------------------------------


def _load_onnx(file: str):
    def load(bundle: Path):
        import onnxruntime as ort

        from ..model.bundle import onnx_session

        sess = onnx_session(Path(bundle) / file, ort.get_available_providers())
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    return load


def _load_openvino(bundle: Path):
    import openvino as ov

    try:
        compiled = ov.Core().compile_model(str(Path(bundle) / "model.xml"), "CPU", OV_CONFIG)
    except Exception as e:
        raise ModelError(f"cannot load {Path(bundle) / 'model.xml'}: {first_line(e)}") from None
    return lambda x: compiled(x)[0]


def _load_pt2(bundle: Path):
    import torch

    try:
        module = torch.export.load(str(Path(bundle) / "model.pt2")).module()
    except Exception as e:
        raise ModelError(f"cannot load {Path(bundle) / 'model.pt2'}: {first_line(e)}") from None

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return run


def load_runner(bundle: Path, name: str = "onnx"):
    """The bundle's `name` file loaded in its own runtime: a function from normalised NCHW float32
    to logits. One line when the bundle has no such file or it cannot run here."""
    fmt = BY_NAME.get(name)
    if fmt is None:
        raise UsageError(f"unknown format {name}: choose from {', '.join(BY_NAME)}")
    if fmt.load is None:
        raise UsageError(f"{name} files cannot run here ({fmt.runtime})")
    if not (Path(bundle) / fmt.file).exists():
        raise ModelError(f"{bundle} has no {fmt.file} (export it with --format {name})")
    return fmt.load(bundle)


# ---- versions ---------------------------------------------------------------------------------


def _versions(*modules: str):
    def get() -> dict:
        out = {}
        for m in modules:
            mod = _coremltools() if m == "coremltools" else __import__(m)
            out[m] = mod.__version__.split("-")[0] if m == "openvino" else mod.__version__
        return out
    return get


@contextlib.contextmanager
def _quiet():
    """coremltools prints what it cannot load on Linux and which versions it has not tested."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _coremltools():
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        import coremltools

    return coremltools


FORMATS: tuple[Format, ...] = (
    Format("onnx", "model.onnx", "torch.onnx (TorchScript exporter, opset 17)", "onnxruntime", "float",
           ("onnx", "onnxruntime"), _write_onnx, _load_onnx("model.onnx"), _versions("torch", "onnx", "onnxruntime"), "onnxruntime"),
    Format("onnx-int8", "model.int8.onnx", "onnxruntime.quantization (static, QDQ, 7-bit weights, calibrated on training images)",
           "onnxruntime", "int8", ("onnxruntime",), _write_int8, _load_onnx("model.int8.onnx"),
           _versions("onnxruntime"), "onnxruntime", weight_copies=0.3),
    Format("openvino", "model.xml", "openvino.convert_model (from model.onnx, fp32)", "OpenVINO (CPU, f32)", "float",
           ("openvino",), _write_openvino, _load_openvino, _versions("openvino"), "openvino",
           extra_files=("model.bin",)),
    Format("coreml", "model.mlpackage", "coremltools (ML program, fp32)", "Core ML (macOS 13+ / iOS 16+ only)", "spec",
           ("coremltools",), _write_coreml, None, _versions("coremltools", "torch"), "coremltools"),
    Format("pt2", "model.pt2", "torch.export (ExportedProgram)", "torch (torch.export.load)", "float",
           ("torch",), _write_pt2, _load_pt2, _versions("torch"), "torch"),
)


BY_NAME = {f.name: f for f in FORMATS}


def weight_copies(names) -> float:
    return sum(BY_NAME[n].weight_copies for n in names)


# ---- checks -----------------------------------------------------------------------------------


def write_and_check(ctx: Context, names, log=lambda *_: None) -> dict:
    """Each format written into the bundle, then checked; model.json's `formats` entries. The torch
    reference's probabilities are computed once."""
    ref = _torch_probs(ctx, to_input(ctx.arrays("val", CHECK_IMAGES), ctx.mean, ctx.std))
    out = {}
    for name in names:
        fmt = BY_NAME[name]
        try:
            written = fmt.write(ctx) or {}
        except (ModelError, UsageError, OSError, RuntimeError):  # the export's own one-line handling
            raise
        except Exception as e:
            raise ModelError(f"writing {name} failed: {first_line(e)}; nothing was exported") from None
        check = {**{"float": _check_float, "int8": _check_int8, "spec": _check_coreml}[fmt.kind](fmt, ctx, ref),
                 **written}
        out[name] = {"file": fmt.file, **({"files": [fmt.file, *fmt.extra_files]} if fmt.extra_files else {}),
                     "writer": fmt.writer, "runtime": fmt.runtime, "runs_here": runs_here(fmt), "check": check,
                     "versions": fmt.versions()}
        log(f"  {name}: {fmt.file}, {describe_check(check)}")
    return out


def _torch_probs(ctx: Context, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _probs(ctx, ctx.model(torch.from_numpy(x)).numpy())


def _probs(ctx: Context, out: np.ndarray) -> np.ndarray:
    """A model's outputs as probabilities: softmax, or as they are from a multi-label model (its sigmoid)."""
    return out if ctx.ds.multi else softmax(out)


def _decisions(probs: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """What a user is told per image: the top-1 class, or the multi-label set at the model's
    thresholds as one row of 0/1 per image."""
    return probs.argmax(1) if thresholds is None else (probs >= thresholds).astype(np.int8)


def _truth(ctx: Context, items) -> np.ndarray:
    if not ctx.ds.multi:
        return np.asarray([it.label for it in items])
    rows = np.zeros((len(items), len(ctx.ds.classes)), np.int8)
    for r, it in enumerate(items):
        rows[r, list(it.labels)] = 1
    return rows


def _bundle_input(ctx: Context, arrays) -> np.ndarray:
    """The images as the bundle's users feed them: model.json's normalisation, read back."""
    norm = read_meta(ctx.bundle)["normalize"]
    return to_input(arrays, norm["mean"], norm["std"])


def _check_float(fmt: Format, ctx: Context, ref: np.ndarray) -> dict:
    got = _probs(ctx, fmt.load(ctx.bundle)(_bundle_input(ctx, ctx.arrays("val", CHECK_IMAGES))))
    diff = float(np.abs(got - ref).max())
    if not diff <= FLOAT_TOLERANCE:  # NaN included
        raise ModelError(f"the {fmt.name} model's probabilities, through the bundle's preprocessing, differ from "
                         f"PyTorch's by {diff:.3g} (more than {FLOAT_TOLERANCE:g}) on {len(ref)} validation images; "
                         "nothing was exported")
    return {"images": len(ref), "max_abs_dprob": diff, "tolerance": FLOAT_TOLERANCE, "passed": True}


def _check_int8(fmt: Format, ctx: Context, ref: np.ndarray) -> dict:
    """Top-1 agreement with torch and the accuracy of each on every validation image (multi-label: every
    label of every image at the model's thresholds, as fastai's accuracy_multi counts)."""
    run, labels, mine, theirs = fmt.load(ctx.bundle), [], [], []
    meta = read_meta(ctx.bundle)
    thresholds = label_thresholds(meta, meta["classes"], ctx.bundle / "model.json")  # None: one class per image
    val = [i for i in ctx.ds.items if i.split == "val"]
    for start in range(0, len(val), 256):
        arrays, ok = load_arrays(val[start : start + 256], ctx.size, ctx.resize)
        labels.append(_truth(ctx, ok))
        theirs.append(_decisions(_torch_probs(ctx, to_input(arrays, ctx.mean, ctx.std)), thresholds))
        mine.append(_decisions(_probs(ctx, run(_bundle_input(ctx, arrays))), thresholds))
    mine, theirs, labels = np.concatenate(mine), np.concatenate(theirs), np.concatenate(labels)
    acc_t, acc_q = float((theirs == labels).mean()), float((mine == labels).mean())
    res = {"images": len(labels), "top1_agreement": float((mine == theirs).mean()), "accuracy_torch": acc_t,
           "accuracy_int8": acc_q, "accuracy_change_points": 100 * (acc_q - acc_t), "max_drop_points": INT8_MAX_DROP,
           "calibration_images": min(CALIBRATION_IMAGES, sum(i.split == "train" for i in ctx.ds.items))}
    if 100 * (acc_t - acc_q) > INT8_MAX_DROP:
        raise ModelError(f"onnx-int8 loses {100 * (acc_t - acc_q):.2f} accuracy points ({100 * acc_t:.2f} -> "
                         f"{100 * acc_q:.2f} % on {len(labels)} validation images, more than {INT8_MAX_DROP:g}); "
                         "nothing was exported (leave onnx-int8 out of --format)")
    return {**res, "passed": True}


def _check_coreml(fmt: Format, ctx: Context, ref: np.ndarray) -> dict:
    """Off Apple systems Core ML cannot run: the saved spec read back (an ML program whose input is
    the bundle's NCHW float32 at its size, output `logits`) and every torch weight found, equal, in
    the program read back from the package."""
    ct = _coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as load_program

    pkg = ctx.bundle / fmt.file
    spec = ct.utils.load_spec(str(pkg))
    inp, problems = spec.description.input, []
    if spec.WhichOneof("Type") != "mlProgram":
        problems.append(f"a {spec.WhichOneof('Type')}, not an ML program")
    if [i.name for i in inp] != ["input"] or list(inp[0].type.multiArrayType.shape)[1:] != [3, ctx.size, ctx.size]:
        problems.append(f"input {[(i.name, list(i.type.multiArrayType.shape)) for i in inp]}")
    if [o.name for o in spec.description.output] != ["logits"]:
        problems.append(f"outputs {[o.name for o in spec.description.output]}")
    weights = pkg / "Data" / "com.apple.CoreML" / "weights"
    with _quiet():
        program = load_program(spec, specification_version=spec.specificationVersion, file_weights_dir=str(weights))
    consts = [op.outputs[0].val for f in program.functions.values() for op in f.operations if op.op_type == "const"]
    consts = [c for c in consts if isinstance(c, np.ndarray) and c.dtype == np.float32]
    state = {k: v.numpy() for k, v in ctx.model.state_dict().items() if v.is_floating_point()}
    missing = [k for k, v in state.items() if not any(c.shape == v.shape and np.array_equal(c, v) for c in consts)]
    if missing:
        problems.append(f"{len(missing)} of {len(state)} weight tensors not found equal ({', '.join(missing[:3])})")
    if problems:
        raise ModelError(f"the Core ML package {pkg.name} does not describe the model: {'; '.join(problems)}; "
                         "nothing was exported")
    return {"spec": f"mlProgram, specification version {spec.specificationVersion}", "input": "input (N, 3, "
            f"{ctx.size}, {ctx.size}) float32, N 1-1024", "output": "logits", "weights_equal": f"{len(state)}/{len(state)}",
            "ran": False, "why_not_run": "Core ML runs only on macOS and iOS", "passed": True}


def describe_check(check: dict) -> str:
    """One line for a format's check."""
    if "max_abs_dprob" in check:
        return f"max |Δprob| {check['max_abs_dprob']:.2g} vs PyTorch on {check['images']} validation images"
    if "top1_agreement" in check:
        return (f"top-1 agreement {100 * check['top1_agreement']:.1f} %, accuracy {100 * check['accuracy_torch']:.2f}"
                f" -> {100 * check['accuracy_int8']:.2f} % ({check['accuracy_change_points']:+.2f} points) on "
                f"{check['images']} validation images")
    return f"spec valid, {check['weights_equal']} weight tensors equal to PyTorch's; not run ({check['why_not_run']})"

