"""Build (or refresh) the decoded-image cache the fast loader reads, ahead of training.

  python data_scripts/build_cache.py ../shared/data/imagenette2-224 --size 128
--size is the training size; the cache stores images a little larger (room for random crops).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.errors import AppError  # noqa: E402
from app.data.cache import open_or_build, stored_size  # noqa: E402
from app.data.scan import scan  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--size", type=int, default=128, help="training size in pixels")
    a = p.parse_args()
    try:
        c = open_or_build(scan(a.data), stored_size(a.size))
    except AppError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
    print(f"{c.dir}: {c.n} images at {c.size}px, {len(c.skipped)} skipped")
