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


def resolve_data(data: str | Path | None, progress=None) -> Path:
    """--data, else the shared copy beside the checkout, else a real download (offline: one line);
    always absolute, since every path a run stores must work from any folder."""
    if data:
        return Path(data).expanduser().resolve()
    if SHARED_DATA.is_dir():
        return SHARED_DATA.resolve()
    return download_imagenette(progress=progress)


def download_imagenette(dest: Path | None = None, progress=None) -> Path:
    """The archive (one bar, fastai's size and MD5 check of its first MB), then a safe extraction
    (tarfile filter='data'); the dataset folder appears only complete."""
    from ..core.download import download

    dest = Path(dest or cache_root() / "datasets")
    target = dest / "imagenette2-320"
    if target.is_dir():  # only ever there complete: extracted beside it, then renamed
        return target
    archive = dest / "archive" / IMAGENETTE_URL.rsplit("/", 1)[-1]
    if not archive.is_file() or archive_problem(IMAGENETTE_URL, archive):
        try:
            download(IMAGENETTE_URL, archive, progress, check=lambda f: archive_problem(IMAGENETTE_URL, f),
                     label="downloading Imagenette")
        except NetworkError as e:
            raise NetworkError(f"could not download Imagenette ({first_line(e, 160)}); no network? "
                               "pass --data PATH to a folder with train/ and val/") from None
    tmp = dest / f".extract-{os.getpid()}"
    extract_archive(archive, tmp)
    os.replace(tmp / target.name, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def archive_problem(url: str, path: Path) -> str | None:
    """fastai's own check of its datasets (size and MD5 of the first MB, fastai/data/download_checks.py,
    read with fastdownload); None when it matches or fastai knows no check for `url`."""
    import fastai.data
    from fastdownload.core import checks_module, path_stats, read_checks

    want = read_checks(checks_module(fastai.data)).get(url)
    got = path_stats(path)
    return None if not want or tuple(got) == tuple(want) else f"size and MD5 {got} are not fastai's {tuple(want)}"


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract with the 'data' filter: no absolute paths, no '..', no links outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot extract {archive}: {e}") from None
