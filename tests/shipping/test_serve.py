"""serve: `python -m app serve BUNDLE` started as a user starts it, on 127.0.0.1, hit with real HTTP;
every bad request answered with its code and one line of JSON while the server goes on serving;
SIGINT stops it cleanly; no torch in the serving process."""

import asyncio
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from ..conftest import ROOT

TIMEOUT = 2  # the server's --timeout in these tests (seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle, *args):
    """`python -m app serve BUNDLE --port P ...` in a new process group with SIGINT at its default
    (a shell's background job would ignore it); waits for /health."""
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "app", "serve", str(bundle), "--port", str(port), *map(str, args)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if p.poll() is not None:
            raise AssertionError(f"serve exited {p.returncode}: {p.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return p, url, port
        except httpx.TransportError:
            time.sleep(0.1)
    p.kill()
    raise AssertionError("serve did not come up in 60 s")


def stop(p) -> tuple[int, str, str]:
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err


@pytest.fixture(scope="module")
def server(all_formats):
    _, bundle, _ = all_formats
    p, url, port = start(bundle, "--timeout", TIMEOUT, "--max-wait-ms", 150, "--max-mb", 8)
    yield {"url": url, "port": port, "bundle": bundle, "process": p}
    if p.poll() is None:
        p.kill()


def val_images(small_data, n=4):
    return sorted((small_data / "val").rglob("*.JPEG"))[:: 15][:n]


def expected(bundle, files):
    """What `predict` itself gives for these files: its predictor, its preprocessing."""
    from app.shipping.predict import BundlePredictor

    pred = BundlePredictor(bundle)
    return pred.probs([pred.load(f) for f in files]), pred.classes


def test_predict_one_and_several_images_as_predict_does(server, small_data):
    files = val_images(small_data)
    want, classes = expected(server["bundle"], files)
    r = httpx.post(f"{server['url']}/predict", files=[("file", (f.name, f.read_bytes(), "image/jpeg")) for f in files],
                   params={"top_k": 4})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [f.name for f in files]
    for res, w in zip(results, want):
        got = {p["class"]: p["probability"] for p in res["predictions"]}
        assert set(got) == set(classes) and max(abs(got[c] - w[i]) for i, c in enumerate(classes)) < 1e-5
        probs = [p["probability"] for p in res["predictions"]]
        assert probs == sorted(probs, reverse=True)
    raw = httpx.post(f"{server['url']}/predict", content=files[0].read_bytes(), headers={"content-type": "image/jpeg"})
    top = raw.json()["results"][0]["predictions"]
    assert len(top) == 3 and top[0]["class"] == classes[int(np.argmax(want[0]))]


def test_health_and_model_describe_what_is_served(server):
    h = httpx.get(f"{server['url']}/health").json()
    assert h["status"] == "ok" and h["format"] == "onnx" and h["queue_limit"] == 64
    m = httpx.get(f"{server['url']}/model").json()
    meta = json.loads((server["bundle"] / "model.json").read_text())
    assert m["classes"] == ["tench", "church", "golf ball", "parachute"] == meta["classes"]
    assert m["input"]["size"] == 64 and m["input"]["normalize"] == meta["normalize"]
    assert m["format"] == "onnx" and m["file"] == "model.onnx"
    import onnxruntime

    assert m["versions"]["runtime"] == {"onnxruntime": onnxruntime.__version__}
    assert m["versions"]["exported_with"]["torch"] == meta["versions"]["torch"]
    assert m["limits"]["max_mb"] == 8 and m["limits"]["timeout"] == TIMEOUT


def png_header(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h RGB pixels, then a few bytes of image data: a decompression
    bomb's header (a real one compresses 1.2 GB of zeros into about a megabyte)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def tiff16(src) -> bytes:
    """A real photo as a 16-bit grayscale TIFF (each 8-bit value v stored as v * 257)."""
    gray = np.asarray(Image.open(src).convert("L"), np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="TIFF")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I;16")
    return buf.getvalue()


def bad_requests(small_data):
    jpeg = val_images(small_data, 1)[0].read_bytes()
    return [
        ("no file: a form with a text field only", {"content": FORM_WITHOUT_FILES, "headers": {
            "content-type": "multipart/form-data; boundary=XyZ"}}, 400, "no image"),
        ("no body at all", {}, 400, "no image"),
        ("an empty file", {"files": {"file": ("empty.jpg", b"", "image/jpeg")}}, 400, "empty file"),
        ("text in a file", {"files": {"file": ("notes.txt", b"just some words\n" * 20, "text/plain")}}, 415,
         "not an image"),
        ("text as the body", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "not an image"),
        ("a truncated JPEG", {"files": {"file": ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")}}, 422, "truncated"),
        ("a 20000 x 20000 PNG header", {"files": {"file": ("bomb.png", png_header(20000, 20000), "image/png")}}, 422,
         "bomb.png: too large: Image size (400000000 pixels) exceeds limit"),
        ("two images, the second truncated", {"files": [("file", ("good.jpg", jpeg, "image/jpeg")),
                                                          ("file", ("cut.jpg", jpeg[:999], "image/jpeg"))]}, 422,
         "cut.jpg: truncated file"),
        ("top_k not a number", {"files": {"file": ("a.jpg", jpeg, "image/jpeg")}, "params": {"top_k": "x"}}, 400,
         "top_k"),
    ]


def assert_one_line_json(r, code, words):
    assert r.status_code == code, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and words in body["error"], body


def test_every_bad_request_gets_its_code_and_the_server_keeps_serving(server, small_data):
    good = val_images(small_data, 1)[0]
    for what, kw, code, words in bad_requests(small_data):
        assert_one_line_json(httpx.post(f"{server['url']}/predict", **kw), code, words)
        ok = httpx.post(f"{server['url']}/predict", files={"file": (good.name, good.read_bytes(), "image/jpeg")})
        assert ok.status_code == 200, (what, ok.text)
    assert server["process"].poll() is None


FORM_WITHOUT_FILES = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--XyZ--\r\n'


def test_a_16_bit_tiff_is_read_as_predict_reads_it(server, small_data, tmp_path):
    """Served, not refused: scaled from 16 bits as `predict` scales it, so it gets exactly what the
    same picture as an 8-bit grayscale PNG gets."""
    src = val_images(small_data, 1)[0]
    data = tiff16(src)
    (tmp_path / "deep.tif").write_bytes(data)
    png = io.BytesIO()
    Image.open(src).convert("L").save(png, format="PNG")
    r16 = httpx.post(f"{server['url']}/predict", files={"file": ("deep.tif", data, "image/tiff")}, params={"top_k": 4})
    r8 = httpx.post(f"{server['url']}/predict", files={"file": ("flat.png", png.getvalue(), "image/png")},
                    params={"top_k": 4})
    assert r16.status_code == r8.status_code == 200, r16.text
    p16, p8 = (r.json()["results"][0]["predictions"] for r in (r16, r8))
    assert [p["class"] for p in p16] == [p["class"] for p in p8]
    assert max(abs(a["probability"] - b["probability"]) for a, b in zip(p16, p8)) < 1e-6
    want, classes = expected(server["bundle"], [tmp_path / "deep.tif"])
    assert p16[0]["class"] == classes[int(np.argmax(want[0]))]


def raw_request(port, head: bytes, body_sender=None, wait=30.0) -> tuple[float, bytes]:
    """Bytes over a plain socket (an HTTP client would not let a test lie about a body or stall):
    (seconds until the answer ended, the answer)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        t = time.perf_counter()
        s.sendall(head)
        if body_sender:
            try:
                body_sender(s)
            except OSError:  # the server closed its side once it had answered
                pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return time.perf_counter() - t, out


def status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_a_200_mb_body_is_refused_before_it_is_read(server):
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
            % (200 * 2**20))
    sent = []

    def send_a_little(s):
        s.sendall(b"\xff" * 65536)
        sent.append(65536)

    seconds, answer = raw_request(server["port"], head, send_a_little)
    assert status_and_error(answer)[0] == 413 and "over the 8 MB limit" in status_and_error(answer)[1]
    assert sum(sent) == 65536 and seconds < TIMEOUT  # answered with 64 KB of the 200 MB sent, at once
    assert b"connection: close" in answer.lower()


def test_a_body_without_a_length_is_cut_off_at_the_limit(server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    sent = []

    def stream(s):
        for _ in range(200 * 16):  # 200 MB in 64 KB chunks, unless the server stops it
            s.sendall(b"10000\r\n" + b"\xff" * 65536 + b"\r\n")
            sent.append(65536)

    _, answer = raw_request(server["port"], head, stream)
    assert status_and_error(answer)[0] == 413
    assert sum(sent) < 100 * 2**20  # refused on the way, not after 200 MB


@pytest.mark.parametrize("head", [b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                                  b"Content-Length: 5000\r\n\r\n\xff\xd8",  # a body that stops coming
                                  b"POST /predict HTTP/1.1\r\nHost: x\r\n"],  # headers that stop coming
                         ids=["slow-body", "slow-headers"])
def test_a_slow_client_is_cut_off_with_408(server, head):
    seconds, answer = raw_request(server["port"], head, wait=TIMEOUT + 20)
    code, error = status_and_error(answer)
    assert code == 408 and "did not arrive" in error
    assert TIMEOUT - 0.5 < seconds < TIMEOUT + 10
    assert httpx.get(f"{server['url']}/health").status_code == 200


def test_a_client_that_leaves_mid_body_does_not_disturb_the_server(server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n\xff\xd8"
    with socket.create_connection(("127.0.0.1", server["port"])) as s:
        s.sendall(head)
        time.sleep(0.3)
    assert httpx.get(f"{server['url']}/health").status_code == 200


def test_concurrent_requests_run_through_the_model_together(server, small_data):
    files = val_images(small_data, 4)
    want, classes = expected(server["bundle"], files)
    before = httpx.get(f"{server['url']}/health").json()

    async def many():
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(*[c.post(f"{server['url']}/predict", files={
                "file": (f.name, f.read_bytes(), "image/jpeg")}) for f in files * 3])

    answers = asyncio.run(many())
    assert all(r.status_code == 200 for r in answers)
    for r, i in zip(answers, list(range(4)) * 3):
        assert r.json()["results"][0]["predictions"][0]["class"] == classes[int(np.argmax(want[i]))]
    after = httpx.get(f"{server['url']}/health").json()
    assert after["requests"] - before["requests"] == 12
    assert after["batches"] - before["batches"] < 12 and after["largest_batch_requests"] >= 2


def test_the_queue_is_bounded_and_waiting_requests_run_as_one_batch():
    """The batcher on its own, its model held: requests beyond --queue are refused with 503, and
    those that waited run through the model as one batch when it is free."""
    from app.shipping.serve import Batcher, Limits, Refused

    gate, calls = threading.Event(), []

    def model(arrays):
        calls.append(len(arrays))
        gate.wait(10)
        return np.eye(4, dtype=np.float32)[np.zeros(len(arrays), int)]

    async def scenario():
        b = Batcher(model, Limits(queue=2, max_batch=8, max_wait_ms=1))
        worker = asyncio.create_task(b.worker())
        first = asyncio.create_task(b.submit([np.zeros(1)]))
        while not calls:  # the model holds the first request
            await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(b.submit([np.zeros(1)] * k)) for k in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Refused) as refused:
            await b.submit([np.zeros(1)])
        gate.set()
        results = await asyncio.gather(first, *waiting)
        worker.cancel()
        return refused.value, results, b.stats

    refused, results, stats = asyncio.run(scenario())
    assert refused.status == 503 and "--queue" in refused.message
    assert calls == [1, 3] and [len(r) for r in results] == [1, 1, 2]
    assert stats["batches"] == 2 and stats["largest_batch_requests"] == 2 and stats["busy_refusals"] == 1


def test_sigint_stops_the_server_cleanly(all_formats, small_data):
    _, bundle, _ = all_formats
    p, url, _ = start(bundle, "--format", "openvino")
    f = val_images(small_data, 1)[0]
    r = httpx.post(f"{url}/predict", files={"file": (f.name, f.read_bytes(), "image/jpeg")}, params={"top_k": 4})
    want, classes = expected(bundle, [f])
    got = {x["class"]: x["probability"] for x in r.json()["results"][0]["predictions"]}
    assert max(abs(got[c] - want[0][i]) for i, c in enumerate(classes)) < 1e-3  # OpenVINO's answer, as ONNX's
    assert httpx.get(f"{url}/model").json()["format"] == "openvino"
    rc, out, err = stop(p)
    assert rc == 0 and "stopped after" in out, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


NO_TORCH = r"""
import json, os, signal, sys, threading, time, urllib.request
from app.cli import main
bundle, port, image = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def client():
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    data = open(image, "rb").read()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=data, headers={"content-type": "image/jpeg"})
    print("ANSWER", urllib.request.urlopen(req, timeout=30).read().decode(), flush=True)
    for path in ("/health", "/model"):
        json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30))
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "fastai", "torchvision"))
    print("HEAVY", json.dumps(heavy), flush=True)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=client, daemon=True).start()
sys.exit(main(["serve", bundle, "--port", str(port)]))
"""


@pytest.mark.parametrize("fmt", ["onnx"])
def test_the_serving_process_never_imports_torch(all_formats, small_data, fmt):
    """`main(['serve', ...])` in a fresh process, asked for a prediction; then its sys.modules."""
    _, bundle, _ = all_formats
    img = val_images(small_data, 1)[0]
    p = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle), str(free_port()), str(img)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.returncode == 0, p.stderr[-2000:]
    assert '"predictions"' in p.stdout.split("ANSWER", 1)[1]
    assert p.stdout.split("HEAVY ", 1)[1].splitlines()[0] == "[]"
    assert "stopped after" in p.stdout


def test_a_port_in_use_is_one_line(all_formats):
    from ..conftest import assert_one_line_error, run_cli

    _, bundle, _ = all_formats
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        p = run_cli("serve", bundle, "--port", s.getsockname()[1], timeout=60)
    assert_one_line_error(p, 5, "cannot listen on 127.0.0.1", "in use")


def test_serve_refuses_a_format_it_cannot_run_torch_free(all_formats):
    from ..conftest import assert_one_line_error, run_cli

    _, bundle, _ = all_formats
    assert_one_line_error(run_cli("serve", bundle, "--format", "pt2", timeout=60), 2, "torch-free")
    assert os.path.isdir(bundle)


def test_the_server_stops_on_sigint_having_logged_no_traceback(server):
    """Last in this file: the module's server, after every request above, stopped as a user stops it."""
    rc, out, err = stop(server["process"])
    assert rc == 0 and "stopped after" in out, (rc, err[-2000:])
    assert "Traceback" not in err and "Error" not in err, err[-2000:]


def test_serve_without_its_extra_is_one_line(all_formats, monkeypatch, capsys):
    import importlib.util

    from app.cli import main

    _, bundle, _ = all_formats
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "uvicorn" else real(n, *a))
    assert main(["serve", str(bundle), "--port", str(free_port())]) == 2
    assert capsys.readouterr().err.strip() == "error: serve needs uvicorn: pip install .[ship]"
