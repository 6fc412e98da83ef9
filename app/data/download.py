"""Where the data is: --data, else the shared copy beside the checkout, else fastai's Imagenette
download (offline: one line naming --data PATH). Archives are extracted safely."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from ..core.errors import DataError, NetworkError, first_line
from ..core.paths import SHARED_DATA, cache_root

IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz"


def resolve_data(data: str | Path | None) -> Path:
    """--data, else the shared copy beside the checkout, else a real download (offline: one line)."""
    if data:
        return Path(data).expanduser()
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    return download_imagenette()


def download_imagenette(dest: Path | None = None) -> Path:
    """fastai's downloader for the archive, then a safe extraction (tarfile filter='data')."""
    dest = Path(dest or cache_root() / "datasets")
    target = dest / "imagenette2-320"
    if target.is_dir():  # only ever there complete: extracted beside it, then renamed
        return target
    try:
        from fastdownload import FastDownload

        archive = FastDownload(base=str(dest), archive="archive", data="data").download(IMAGENETTE_URL)
    except Exception as e:  # urllib/HTTP errors have many types; all mean "no download"
        raise NetworkError(
            f"could not download Imagenette from {IMAGENETTE_URL} ({first_line(e, 120)}); "
            "no network? pass --data PATH to a folder with train/ and val/"
        ) from None
    tmp = dest / f".extract-{os.getpid()}"
    extract_archive(Path(archive), tmp)
    os.replace(tmp / target.name, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract with the 'data' filter: no absolute paths, no '..', no links outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot extract {archive}: {e}") from None
