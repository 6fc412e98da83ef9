"""`python -m app serve BUNDLE`: an HTTP server (Starlette on uvicorn) over the bundle's ONNX model
(or its int8 or OpenVINO file), torch never imported.

POST /predict takes one image as the body or several as multipart form data and answers the top-k
as JSON; GET /health and GET /model say how it is and what it serves. Images are decoded exactly as
`predict` decodes files (data/images.py: 16-bit TIFFs scaled, EXIF rotation, transparency on
white). Concurrent requests wait in one bounded queue and run through the model together, up to
--max-batch images. A bad request is a 4xx with a one-line JSON error, and the server goes on:
a body over --max-mb is refused from its Content-Length before it is read (413), a body or headers
that do not arrive within --timeout seconds are cut off (408), an image that is not one, empty,
truncated or over Pillow's decompression-bomb limit is named with why (400, 415, 422), a full
queue is 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ModelError, RunError, UsageError
from ..data.images import BadImage, load_square
from ..model.bundle import label_thresholds, labels_over, read_meta, softmax, to_input
from .formats import BY_NAME, load_runner, need

SERVABLE = ("onnx", "onnx-int8", "openvino")  # the torch-free runtimes of the formats table


@dataclass(frozen=True)
class Limits:
    max_mb: float = 20.0  # request body
    max_batch: int = 32  # images run through the model at once (and per request)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    queue: int = 64  # requests waiting for the model; beyond: 503
    timeout: float = 10.0  # seconds for a request's headers, and again for its body
    top_k: int = 3


class Refused(Exception):
    """A bad request: its HTTP status and the one-line reason sent back."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Model:
    """One format of a bundle in its own runtime, with the bundle's preprocessing."""

    def __init__(self, bundle: Path, fmt: str = "onnx"):
        if fmt not in SERVABLE:
            raise UsageError(f"serve runs {', '.join(SERVABLE)} (torch-free), not {fmt}")
        self.bundle, self.format, self.file = Path(bundle), fmt, BY_NAME[fmt].file
        self.meta = read_meta(bundle, need=("model.onnx", self.file))
        self.classes, inp, norm = self.meta["classes"], self.meta["input"], self.meta["normalize"]
        self.size, self.resize = inp["size"], inp.get("resize_method", "crop")
        self.mean, self.std = norm["mean"], norm["std"]
        self.run = load_runner(bundle, fmt)
        self.thresholds = label_thresholds(self.meta, self.classes, bundle / "model.json")
        out = self.run(to_input([np.zeros((self.size, self.size, 3), np.uint8)], self.mean, self.std)).shape
        if out != (1, len(self.classes)):
            raise ModelError(f"{self.bundle / self.file} gives {out[1:]} outputs per image but model.json lists "
                             f"{len(self.classes)} classes")

    def probs(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Softmax over the classes; a multi-label model's ONNX already ends in a sigmoid per label."""
        out = self.run(to_input(arrays, self.mean, self.std))
        return out if self.thresholds is not None else softmax(out)

    def decode(self, data: bytes, folder: Path) -> np.ndarray:
        """The image as `predict` reads a file: written to a private temporary file, decoded there."""
        fd, name = tempfile.mkstemp(dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return load_square(name, self.size, self.resize)
        finally:
            os.unlink(name)

    def describe(self) -> dict:
        reader = BY_NAME[self.format].reader
        runtime = {reader: __import__(reader).__version__.split("-")[0]}
        return {"classes": self.classes, "input": {**self.meta["input"], "normalize": self.meta["normalize"]},
                "format": self.format, "file": self.file, "bundle": str(self.bundle.resolve()),
                "bundle_format": self.meta["format"], "metrics": self.meta.get("metrics", {}),
                "versions": {"runtime": runtime, "exported_with": self.meta.get("versions", {})}}


class Batcher:
    """One bounded queue of requests in front of the model: a worker takes what has arrived (up to
    max_batch images, waiting max_wait_ms for more once the first is there) and runs it as one
    batch in a single model thread."""

    def __init__(self, probs, limits: Limits):
        self.probs, self.limits = probs, limits
        self.queue: asyncio.Queue = asyncio.Queue(limits.queue)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.stats = {"requests": 0, "images": 0, "batches": 0, "largest_batch_requests": 0,
                      "largest_batch_images": 0, "busy_refusals": 0}

    async def submit(self, arrays: list[np.ndarray]) -> np.ndarray:
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((arrays, fut))
        except asyncio.QueueFull:
            self.stats["busy_refusals"] += 1
            raise Refused(503, f"server busy: {self.limits.queue} requests already wait for the model (--queue)") \
                from None
        return await fut

    async def worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            n, deadline = len(batch[0][0]), loop.time() + self.limits.max_wait_ms / 1000
            while n < self.limits.max_batch:
                try:
                    item = self.queue.get_nowait() if not self.queue.empty() else \
                        await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                batch.append(item)
                n += len(item[0])
            await self._run(batch, loop)

    async def _run(self, batch: list, loop) -> None:
        arrays = [a for arrs, _ in batch for a in arrs]
        try:
            probs = await loop.run_in_executor(self.pool, self.probs, arrays)
        except Exception as e:  # the model failed: every waiting request hears why
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        s, start = self.stats, 0
        s["requests"] += len(batch)
        s["images"] += len(arrays)
        s["batches"] += 1
        s["largest_batch_requests"] = max(s["largest_batch_requests"], len(batch))
        s["largest_batch_images"] = max(s["largest_batch_images"], len(arrays))
        for arrs, fut in batch:
            if not fut.done():
                fut.set_result(probs[start : start + len(arrs)])
            start += len(arrs)


async def read_body(request, limits: Limits) -> bytes:
    """The body, refused unread when its Content-Length is over the limit, cut off as soon as a
    body without one passes it or when it has not all arrived within the timeout."""
    from starlette.requests import ClientDisconnect

    limit = int(limits.max_mb * 2**20)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Refused(413 if length.isdigit() else 400, f"request body of {length} bytes is over the "
                      f"{limits.max_mb:g} MB limit (--max-mb)" if length.isdigit() else "bad Content-Length")
    loop, chunks, n = asyncio.get_running_loop(), [], 0
    deadline, stream = loop.time() + limits.timeout, request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.001, deadline - loop.time()))
        except StopAsyncIteration:
            return b"".join(chunks)
        except ClientDisconnect:  # nobody to answer; one line in the log, no traceback
            raise Refused(400, "the client went away before its body arrived") from None
        except TimeoutError:
            raise Refused(408, f"the request body did not arrive within {limits.timeout:g} s (--timeout)") from None
        n += len(chunk)
        if n > limit:
            raise Refused(413, f"request body over the {limits.max_mb:g} MB limit (--max-mb)")
        chunks.append(chunk)


async def uploads(request, body: bytes, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image sent: the multipart form's files, or the body itself."""
    from starlette.formparsers import MultiPartException
    from starlette.requests import Request

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=limits.max_batch, max_fields=16,
                                                            max_part_size=int(limits.max_mb * 2**20))
        except MultiPartException as e:
            raise Refused(400, f"bad multipart form: {e.message}") from None
        files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if not isinstance(v, str)]
        await form.close()
    elif kind.startswith("text/") or kind == "application/json":  # (curl --data-binary sends a form type: read)
        raise Refused(415, f"a {kind} body is not an image: send the image's bytes, or multipart form files")
    else:
        files = [("body", body)] if body else []
    if not files:
        raise Refused(400, "no image in the request: send an image as the body, or as files of a multipart form "
                      "(curl -F file=@photo.jpg)")
    return files


def status_of(reason: str) -> int:
    """The HTTP status of a BadImage verdict."""
    if reason.startswith("empty"):
        return 400
    return 415 if reason.startswith("not an image") else 422


class Service:
    """The endpoints over one model, its batcher and a private folder for decoding uploads."""

    def __init__(self, model: Model, limits: Limits):
        self.model, self.limits = model, limits
        self.batcher: Batcher | None = None
        self.tmp: Path | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.batcher = Batcher(self.model.probs, self.limits)
        self.tmp = Path(tempfile.mkdtemp(prefix="app-serve-"))
        task = asyncio.create_task(self.batcher.worker())
        try:
            yield
        finally:
            task.cancel()
            self.batcher.pool.shutdown(wait=False)
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def predict(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        model, limits = self.model, self.limits
        top_k = _top_k(request, limits.top_k, len(model.classes))
        files = await uploads(request, await read_body(request, limits), limits)
        if len(files) > limits.max_batch:
            raise Refused(413, f"{len(files)} images in one request, over --max-batch {limits.max_batch}")
        arrays = []
        for name, data in files:
            try:
                arrays.append(await run_in_threadpool(model.decode, data, self.tmp))
            except BadImage as e:
                raise Refused(status_of(str(e)), f"{name}: {e}") from None
        probs = await self.batcher.submit(arrays)
        return JSONResponse({"results": [_top(name, p, model, top_k) for (name, _), p in zip(files, probs)]})

    async def health(self, request):
        from starlette.responses import JSONResponse

        b = self.batcher
        return JSONResponse({"status": "ok", "format": self.model.format, "queued": b.queue.qsize(),
                             "queue_limit": self.limits.queue, **b.stats})

    async def describe(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({**self.model.describe(), "limits": self.limits.__dict__})


def make_app(model: Model, limits: Limits):
    """The Starlette application: /predict, /health, /model, every error one line of JSON."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def refused(request, exc):
        return JSONResponse({"error": exc.message}, exc.status, headers=_close(exc.status))

    async def http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, exc.status_code)

    s = Service(model, limits)
    routes = [Route("/predict", s.predict, methods=["POST"]), Route("/health", s.health), Route("/model", s.describe)]
    return Starlette(routes=routes, lifespan=s.lifespan, exception_handlers={Refused: refused, HTTPException: http_error})


def _close(status: int) -> dict:
    """A body refused unread leaves the connection unusable: say that it closes."""
    return {"connection": "close"} if status in (408, 413) else {"retry-after": "1"} if status == 503 else {}


def _top_k(request, default: int, n: int) -> int:
    raw = request.query_params.get("top_k", str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise Refused(400, f"top_k must be a whole number from 1, not {raw!r}")
    return min(int(raw), n)


def _top(name: str, p: np.ndarray, model: Model, k: int) -> dict:
    """The top-k; a multi-label model's also every label at or above its own threshold, as `predict`."""
    classes, order = model.classes, np.argsort(-p)[:k]
    r = {"filename": name, "predictions": [{"class": classes[i], "probability": float(p[i])} for i in order]}
    if model.thresholds is not None:
        r["labels"] = [{"class": classes[i], "probability": float(p[i])} for i in labels_over(p, model.thresholds)]
    return r


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol with a deadline on the first request's headers (uvicorn has none: a
    client that opens a connection and sends half a request line would hold it for ever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    late = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s")
    body = b'{"error": "the request headers did not arrive in time (--timeout)"}'

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.loop.call_later(seconds, self._headers_late)

        def _headers_late(self):
            if self.cycle is None and not self.transport.is_closing():
                self.transport.write(late % (len(body), body))
                self.transport.close()

    return HeaderDeadline


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one line, not uvicorn's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name == "posix":  # (on Windows the option lets a second server take a port in use)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RunError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


@contextlib.contextmanager
def _term_as_interrupt():
    """SIGTERM (a service manager's stop) ends like Ctrl-C: uvicorn shuts down gracefully on it, then
    raises it again, which would kill the process before it says that it stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def serve_bundle(bundle: Path, host: str = "127.0.0.1", port: int = 8000, fmt: str = "onnx",
                 limits: Limits = Limits(), log=print) -> dict:
    """`python -m app serve BUNDLE`: serves until Ctrl-C (SIGINT) or SIGTERM, then stops cleanly."""
    need("serve", "uvicorn", "starlette", "multipart", *BY_NAME.get(fmt, BY_NAME["onnx"]).needs)
    import uvicorn

    model = Model(bundle, fmt)
    sock = listen(host, port)
    config = uvicorn.Config(make_app(model, limits), http=header_timeout_protocol(limits.timeout),
                            log_level="warning", access_log=False, timeout_keep_alive=5,
                            limit_concurrency=4 * limits.queue + 16)
    server = uvicorn.Server(config)
    where = sock.getsockname()
    log(f"serving {bundle} ({fmt}, {len(model.classes)} classes, {model.size} px) on http://{where[0]}:{where[1]}  "
        "(POST /predict, GET /health, GET /model; Ctrl-C stops)")
    t = time.perf_counter()
    with contextlib.suppress(KeyboardInterrupt), _term_as_interrupt():  # uvicorn shuts down, then re-raises the signal
        server.run(sockets=[sock])
    sock.close()
    log(f"stopped after {time.perf_counter() - t:.0f} s")
    return {"seconds": time.perf_counter() - t}
