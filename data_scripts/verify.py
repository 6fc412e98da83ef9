"""Check a dataset: layout, classes, counts, and every image decoded (bad files listed with reasons).

  python data_scripts/verify.py ../shared/data/imagenette2-224
Same as `python -m app data DIR`; exits 3 on a layout problem.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["data", *sys.argv[1:]]))
