#!/usr/bin/env bash
# The GPU check: one command on a GPU machine, from a bare checkout, in <= 7 minutes (GPU_CHECK_SECONDS).
#
#   Before, where pip works (the GPU host may have no network), from the repository root:
#     ../shared/tools/gpu-wheels.sh      # fastai and its pure-Python needs -> .devwhl/
#     ../shared/tools/pack-data.sh 3     # every 3rd Imagenette image (4,464) -> .devdata/part_*
#   On the GPU machine, from the repository root (carry .devwhl and .devdata):
#     bash benchmarks/gpu_check.sh
#
# It runs tests/test_gpu.py (every GPU branch), times nvJPEG against PIL workers on the real JPEGs,
# runs the main job (`train`: the gpu-fast preset, evaluation, report, export) and lr-find with the
# gpu-fast settings, then `bench`, prints PASS/FAIL/SKIP per branch and writes
# benchmarks/gpu-<card>.json (and $OUT/ when set). Without a GPU every GPU step is a SKIP with its
# reason and the script exits 0; with one, it exits 1 when any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 APP_PROGRESS=0 PYTHONWARNINGS=ignore
py=${PYTHON:-python3}
work=$(mktemp -d /tmp/gpu-check.XXXX)
deadline=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-420} ))
export APP_CACHE_DIR=$work/cache APP_RUNS_DIR=$work/runs

# fastai & co. from the carried wheels when the host lacks them
if ! $py -c "import fastai" 2>/dev/null; then
  ls .devwhl/*.whl >/dev/null 2>&1 || { echo "FAIL setup: fastai missing and no .devwhl/ (run ../shared/tools/gpu-wheels.sh)"; exit 1; }
  $py -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .devwhl/*.whl || exit 1
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# the data: ../shared beside the checkout, else the carried parts
data=../shared/data/imagenette2-224
if [ ! -d "$data" ]; then
  ls .devdata/part_* >/dev/null 2>&1 || { echo "FAIL setup: no data (run ../shared/tools/pack-data.sh 3)"; exit 1; }
  mkdir -p "$work/data" && cat .devdata/part_* | tar x -C "$work/data" && data=$work/data/imagenette2-224
fi
export APP_TEST_DATA=$data
gpu=$($py -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
echo "gpu check: ${gpu:-no CUDA GPU}; data $data; work $work"

status=()
step() {  # step NAME MAX_SECONDS COMMAND...: PASS/FAIL/SKIP with its log in $work/NAME.log
  local name=$1 max=$2; shift 2
  local left=$(( deadline - $(date +%s) )); (( left < max )) && max=$left
  if [ -z "$gpu" ] && [ "$name" != tests ]; then echo "SKIP $name: no CUDA GPU"; status+=("$name SKIP 0"); return; fi
  if (( max < 20 )); then echo "SKIP $name: out of time"; status+=("$name SKIP 0"); return; fi
  local t0=$(date +%s)
  if timeout "$max" "$@" >"$work/$name.log" 2>&1; then r=PASS; else r=FAIL; fi
  local took=$(( $(date +%s) - t0 ))
  echo "$r $name (${took}s): $(tail -n 1 "$work/$name.log")"
  status+=("$name $r $took")
}

step tests 210 $py -m pytest -q -m gpu -p no:cacheprovider -rs tests/test_gpu.py --junitxml="$work/junit.xml"
step train 150 $py -m app train --data "$data" --out "$work/runs/train"
step decode 45 $py -c "import json,sys; from app.bench.timing import decode_rates; print(json.dumps(decode_rates(sys.argv[1])))" "$data"
step bench 120 $py -m app bench --data "$data" --images 3072 --size 128 --bs 256 --repeats 2 --json "$work/bench.json"
step lr_find 45 $py -m app lr-find --data "$data" --preset gpu-fast --out "$work/runs/lr-find"

printf '%s\n' "${status[@]}" > "$work/status.txt"
$py - "$work" "$gpu" <<'PY'
import json, re, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path
work, gpu = Path(sys.argv[1]), sys.argv[2]
def js(p):
    try: return json.loads(Path(p).read_text())
    except (OSError, ValueError): return None
out = {"gpu": gpu or None, "steps": {}}
for line in (work / "status.txt").read_text().split("\n"):
    if line.strip():
        name, result, secs = line.split()
        out["steps"][name] = {"result": result, "seconds": int(secs)}
try:
    import torch, torchvision, fastai
    out["versions"] = {"torch": torch.__version__, "torchvision": torchvision.__version__, "fastai": fastai.__version__,
                       "cuda": torch.version.cuda}
    out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True).stdout.strip() or None
except Exception as e:
    out["versions"] = str(e)
if (work / "junit.xml").is_file():
    out["tests"] = {c.get("name"): ("failed" if c.find("failure") is not None or c.find("error") is not None
                                    else "skipped" if c.find("skipped") is not None else "passed")
                    for c in ET.parse(work / "junit.xml").iter("testcase")}
log = (work / "decode.log").read_text().strip().splitlines() if (work / "decode.log").is_file() else []
out["decode"] = json.loads(log[-1]) if log and log[-1].startswith("{") else None
run = work / "runs" / "train"
cfg, m = js(run / "config.json"), js(run / "metrics.json")
if cfg and m:
    out["train"] = {"preset": cfg["config"]["preset"], "epochs": cfg["config"]["epochs"], "lr": cfg["config"]["lr"],
                    "size": cfg["config"]["size"], "bs": cfg["config"]["bs"], "weights": cfg.get("weights_reason"),
                    "accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "n_val": m["n"],
                    "fit_seconds": cfg.get("fit_seconds"), "wall_seconds": cfg.get("wall_seconds")}
lf = js(work / "runs" / "lr-find" / "lr_find.json")
if lf:
    out["lr_find_gpu_fast"] = {"suggestions": lf["suggestions"], "recommended": lf["recommended"]}
out["bench"] = js(work / "bench.json")
if not gpu:
    sys.exit(print("no GPU: nothing written"))
slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
text = json.dumps(out, indent=2)
Path("benchmarks").mkdir(exist_ok=True)
(Path("benchmarks") / f"gpu-{slug}.json").write_text(text)
import os
if os.environ.get("OUT"):
    (Path(os.environ["OUT"]) / f"gpu-{slug}.json").write_text(text)
    for f in ("tests.log", "train.log", "bench.log", "decode.log", "lr_find.log"):
        if (work / f).is_file():
            (Path(os.environ["OUT"]) / f).write_text((work / f).read_text()[-200000:])
print(f"wrote benchmarks/gpu-{slug}.json")
PY
if [ -n "$gpu" ] && grep -q " FAIL " "$work/status.txt"; then exit 1; fi
exit 0
