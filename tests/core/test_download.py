"""The one downloader, against a real HTTP server on 127.0.0.1 (http.server in a thread): the
bytes arrive whole, the SHA-256 prefix is checked while streaming, a bar shows on a terminal and
is gone afterwards, and every failure (refused, 404, cut short, wrong hash, a failed check) is one
NetworkError line that leaves no file behind."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
from functools import partial

import pytest
from rich.console import Console

from app.core.download import download
from app.core.errors import NetworkError
from app.core.progress import make_progress

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB: several chunks


class _Short(http.server.SimpleHTTPRequestHandler):
    """Serves files; /short promises more bytes than it sends, then hangs up."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            return
        super().do_GET()

    def log_message(self, *a):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob.bin").write_bytes(PAYLOAD)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Short, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused, as offline
    return port


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_download_arrives_whole_with_its_hash_checked_and_one_bar_shown(server, tmp_path):
    out = io.StringIO()
    progress = make_progress(Console(file=out, force_terminal=True, width=120), enabled=True)
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    with progress:
        got = download(f"{server}/blob.bin", tmp_path / "dl" / "blob.bin", progress, sha256_prefix=prefix,
                       label="downloading blob")
        assert progress.tasks == []  # the bar is gone once the file is there
    assert got.read_bytes() == PAYLOAD and _leftovers(tmp_path / "dl") == ["blob.bin"]
    drawn = out.getvalue()
    assert "downloading blob" in drawn and "MB" in drawn  # it was drawn, in megabytes


@pytest.mark.parametrize("case", ["refused", "missing", "short", "hash", "check"])
def test_every_failure_is_one_line_and_leaves_no_file(server, tmp_path, case):
    url = {"refused": f"http://127.0.0.1:{_closed_port()}/blob.bin", "missing": f"{server}/nope.bin",
           "short": f"{server}/short"}.get(case, f"{server}/blob.bin")
    kw = {"hash": {"sha256_prefix": "00000000"}, "check": {"check": lambda p: "not the archive expected"}}.get(case, {})
    with pytest.raises(NetworkError) as e:
        download(url, tmp_path / "dl" / "blob.bin", timeout=5, **kw)
    msg = str(e.value)
    assert "\n" not in msg and url in msg, msg
    why = {"refused": "refused", "missing": "404", "short": "1000 of", "hash": "does not start with 00000000",
           "check": "not the archive expected"}[case]
    assert why in msg, msg
    assert _leftovers(tmp_path / "dl") == []  # no partial file, nothing that looks whole


def test_the_new_user_paths_need_no_posix_only_module():
    """Windows and macOS users: with fcntl, resource, termios, pwd and grp hidden, the downloader,
    the progress display, the CPU-bf16 check, the time keeper and the benches still import and run."""
    import subprocess
    import sys

    from ..conftest import ROOT

    code = ("import sys\nfor m in ('fcntl', 'resource', 'termios', 'pwd', 'grp'):\n    sys.modules[m] = None\n"
            "import app.core.download, app.core.progress, app.model.progress, app.training.keeper, app.bench.keep\n"
            "import app.bench.precision\nfrom app.core.device import cpu_bf16\n"
            "print(cpu_bf16('/no/such/cpuinfo')['native'])\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr[-2000:]
