"""`python -m app bench --serve BUNDLE`: `python -m app serve BUNDLE` started as a user starts it, then
N concurrent clients (httpx, one image per request, real validation JPEGs) for a fixed time on
localhost: requests/s, latency p50 / p99, errors (none expected), the batches the server formed;
beside `predict`'s own img/s on the same images and the host's model-only training speed. The
clients share the machine with the server (on 2 cores, they take part of it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.errors import RunError
from ..core.paths import PROJECT_ROOT
from .timing import command_line


def run_serve_bench(bundle: Path, clients: int = 8, seconds: float = 30.0, data=None, log=print) -> dict:
    from ..core.device import pick_device
    from ..core.rundir import device_info, versions
    from ..data.scan import scan
    from ..model.bundle import read_meta
    from ..shipping.formats import need
    from .keep import model_only_img_s

    need("bench --serve", "httpx", "uvicorn", "starlette", "multipart")

    meta = read_meta(bundle)
    root = Path(data or meta.get("data") or "")
    if not root.is_dir():
        raise RunError(f"the bundle's data {root} is not here: pass --data DIR (real images to send)")
    tmp = Path(tempfile.mkdtemp(prefix="app-bench-serve-"))
    try:
        files = [it.path for it in scan(root).items if it.split == "val"][::7][:256]
        res = {"device": device_info(pick_device("cpu", log=lambda *_: None)), "versions": versions(),
               "command": command_line(), "bundle": str(Path(bundle).resolve()), "size": meta["input"]["size"],
               "clients": clients, "seconds": seconds, "images": len(files),
               "host_model_only_img_s_128px": model_only_img_s(root, tmp / "probe")}
        log(f"serve bench: {clients} clients for {seconds:g} s on {bundle}; this host trains the model alone at "
            f"{res['host_model_only_img_s_128px']:.0f} img/s (128 px, bs 64)")
        res["predict_img_s"] = _predict_img_s(bundle, files, tmp / "images")
        res.update(_load_test(bundle, files, clients, seconds))
        log(f"  {res['requests_s']:.1f} requests/s (one image each), latency p50 {res['latency_p50_ms']:.0f} ms, "
            f"p99 {res['latency_p99_ms']:.0f} ms, {res['errors']} errors; the server's largest batch "
            f"{res['server']['largest_batch_requests']} requests; `predict` on a folder {res['predict_img_s']:.0f} img/s")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _predict_img_s(bundle: Path, files: list, folder: Path) -> float:
    """`predict BUNDLE FOLDER` (bs 64) on the images the clients send: img/s, model loading included."""
    from ..shipping.predict import predict_path

    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        shutil.copy(f, folder / f"{i:04d}{Path(f).suffix}")
    t = time.perf_counter()
    predict_path(bundle, folder, bs=64)
    return len(files) / (time.perf_counter() - t)


def _load_test(bundle: Path, files: list, clients: int, seconds: float) -> dict:
    import httpx

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", str(bundle), "--port", str(port)],
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"},
                              preexec_fn=_default_sigint if os.name == "posix" else None)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(server, url)
        bodies = [Path(f).read_bytes() for f in files]
        out = asyncio.run(_clients(url, bodies, clients, seconds))
        out["server"] = httpx.get(f"{url}/health").json()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    out["server_exit"] = server.returncode
    return out


async def _clients(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` loops, each posting one image at a time until the time is up (after one warm-up
    request each)."""
    import httpx

    lat, errors = [], []

    async def one(c, k: int) -> None:
        t = time.perf_counter()
        try:
            r = await c.post(f"{url}/predict", files={"file": (f"{k}.jpg", bodies[k % len(bodies)], "image/jpeg")})
            ok, why = r.status_code == 200, f"{r.status_code} {r.text[:160]}"
        except httpx.HTTPError as e:
            ok, why = False, f"{type(e).__name__}: {e}"[:200]
        (lat.append(1000 * (time.perf_counter() - t)) if ok else errors.append(why))

    async def client(c, k: int, end: float) -> None:
        while time.perf_counter() < end:
            await one(c, k)
            k += clients

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as c:
        await asyncio.gather(*[one(c, k) for k in range(clients)])
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*[client(c, k, t0 + seconds) for k in range(clients)])
        wall = time.perf_counter() - t0
    return {"requests": len(lat), "requests_s": len(lat) / wall, "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)), "errors": len(errors), "error_samples": errors[:5],
            "wall_s": wall}


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's background job would ignore it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(server, url: str, limit: float = 120.0) -> None:
    import httpx

    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        if server.poll() is not None:
            raise RunError(f"serve exited with {server.returncode}: {server.stderr.read().strip()[-300:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RunError(f"serve did not answer on {url} within {limit:.0f} s")
