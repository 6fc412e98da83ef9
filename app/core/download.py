"""One streaming downloader for everything the app fetches (ImageNet weights, Imagenette), with a
rich bar (core/progress.py) instead of tqdm (torch.hub) or fastprogress (fastdownload), whose
updates become one line each under rich's live display.

The file is written beside its destination and renamed only once complete and checked (SHA-256
prefix while streaming, as torch.hub.download_url_to_file does, and/or a `check` on the file), so a
failed or killed download never leaves a file that looks whole. Proxies come from the environment
(urllib), and a socket timeout makes a network that drops packets fail instead of hang.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from urllib.request import Request, urlopen

from .errors import NetworkError, first_line
from .progress import bar

CHUNK = 1 << 16


def download(url: str, dest: str | Path, progress=None, sha256_prefix: str | None = None, check=None,
             timeout: float = 20.0, label: str | None = None) -> Path:
    """`url` to `dest`; NetworkError (one line) when it cannot be had or is not the file expected.
    `check(path)` returns None for a good file, else why it is not."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        digest = _fetch(url, tmp, progress, timeout, label or f"downloading {dest.name}")
        why = None
        if sha256_prefix and not digest.startswith(sha256_prefix):
            why = f"SHA-256 {digest[:12]}... does not start with {sha256_prefix}"
        why = why or (check(tmp) if check else None)
        if why:
            raise NetworkError(f"{url} gave a corrupt or unexpected file: {why}")
        os.replace(tmp, dest)
    except NetworkError:
        raise
    except Exception as e:  # URLError, HTTPError, timeouts, a short read, a full disk: no usable file
        code = f" {e.code}" if isinstance(getattr(e, "code", None), int) else ""  # HTTPError: its status
        raise NetworkError(f"download of {url} failed: {type(e).__name__}{code}: {first_line(e, 120)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(url: str, tmp: Path, progress, timeout: float, label: str) -> str:
    """Stream into `tmp` with one bar (bytes); the SHA-256 of what was written."""
    sha = hashlib.sha256()
    with urlopen(Request(url, headers={"User-Agent": "alexnet-cli"}), timeout=timeout) as r, open(tmp, "wb") as f:
        size = r.headers.get("Content-Length")
        total = int(size) if size and size.isdigit() else None
        got = 0
        with bar(progress, label, total, unit="bytes") as advance:
            while block := r.read(CHUNK):
                f.write(block)
                sha.update(block)
                got += len(block)
                advance(len(block))
        if total is not None and got != total:
            raise OSError(f"connection closed after {got} of {total} bytes")
    return sha.hexdigest()
