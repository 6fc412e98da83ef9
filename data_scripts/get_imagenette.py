"""Download Imagenette (320 px) with the app's downloader (one bar on a terminal; fastai's size and
MD5 check) and extract it safely (tarfile 'data' filter).

  python data_scripts/get_imagenette.py [DEST]
Offline this fails with one line; point the app at a local copy with --data PATH instead.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from app.core.errors import AppError  # noqa: E402
from app.core.paths import show_progress  # noqa: E402
from app.core.progress import make_progress  # noqa: E402
from app.data.download import download_imagenette  # noqa: E402

if __name__ == "__main__":
    try:
        with make_progress(Console(), show_progress()) as progress:
            root = download_imagenette(Path(sys.argv[1]) if len(sys.argv) > 1 else None, progress=progress)
        print(root)
    except AppError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
