"""Copy a class-balanced random subset of an ImageNet-style dataset.

  python data_scripts/subset.py ../shared/data/imagenette2-224 /tmp/nette-small --train 50 --val 20
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.errors import AppError  # noqa: E402
from app.data.subset import make_subset  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--train", type=int, default=50, help="images per class from train/")
    p.add_argument("--val", type=int, default=20, help="images per class from val/")
    p.add_argument("--classes", nargs="*", help="class folders to keep (default: all)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    try:
        print(make_subset(a.src, a.dst, a.train, a.val, a.classes, a.seed))
    except AppError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
