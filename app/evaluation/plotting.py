"""matplotlib as every figure uses it: the Agg backend (no screen), one style, and the one way a
figure is saved (white, nothing clipped; photo grids as JPEG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# text.parse_math off: class names and paths come from the data, and `$...$` in one is a name, not
# mathtext (an unknown macro there would stop the figures). No figure here uses mathtext.
plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.titleweight": "bold",
                     "text.parse_math": False})


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = path.suffix == ".jpg"  # photo grids as JPEG: a tenth of the PNG's bytes in the report
    fig.savefig(path, bbox_inches="tight", facecolor="white", **({"pil_kwargs": {"quality": 85}} if photo else {}))
    plt.close(fig)
    return path
