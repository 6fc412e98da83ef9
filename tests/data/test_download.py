"""Imagenette's download, against a real HTTP server on 127.0.0.1 serving a real .tgz of real
images: fetched with one bar, extracted safely, the dataset folder there only complete; offline it
is one line naming --data PATH (exit 6 from the CLI, tests/test_cli.py)."""

from __future__ import annotations

import http.server
import io
import socket
import tarfile
import threading
from functools import partial

import pytest
from rich.console import Console

from app.core.errors import NetworkError
from app.core.progress import make_progress
from app.data import download as dl
from app.data.scan import scan


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture
def served_archive(tiny_data, tmp_path):
    """imagenette2-320.tgz (the tiny real subset under Imagenette's folder name) on a local server."""
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "imagenette2-320.tgz", "w:gz") as tf:
        tf.add(tiny_data, arcname="imagenette2-320")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(www)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/imagenette2-320.tgz"
    srv.shutdown()
    srv.server_close()


def test_imagenette_is_downloaded_with_a_bar_and_extracted(served_archive, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "IMAGENETTE_URL", served_archive)
    out = io.StringIO()
    progress = make_progress(Console(file=out, force_terminal=True, width=120), enabled=True)
    with progress:
        root = dl.download_imagenette(tmp_path / "datasets", progress=progress)
        assert progress.tasks == []
    assert root == tmp_path / "datasets" / "imagenette2-320"
    assert scan(root).counts() == scan(tiny_data).counts()
    assert "downloading Imagenette" in out.getvalue()
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["archive", "imagenette2-320"]


def test_imagenette_offline_is_one_line_naming_data_path(tmp_path, monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    monkeypatch.setattr(dl, "IMAGENETTE_URL", f"http://127.0.0.1:{s.getsockname()[1]}/imagenette2-320.tgz")
    s.close()
    with pytest.raises(NetworkError) as e:
        dl.download_imagenette(tmp_path / "datasets")
    assert "--data PATH" in str(e.value) and "refused" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "datasets" / "imagenette2-320").exists()
    assert list((tmp_path / "datasets" / "archive").iterdir()) == []  # no partial archive


def test_fastais_own_check_refuses_an_archive_that_is_not_its_imagenette(tmp_path):
    fake = tmp_path / "imagenette2-320.tgz"
    fake.write_bytes(b"not the archive")
    why = dl.archive_problem("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", fake)
    assert why and "341663724" in why  # fastai's recorded size for it
    assert dl.archive_problem("http://127.0.0.1/unknown.tgz", fake) is None  # fastai knows no check for it
