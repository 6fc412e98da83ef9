"""top_losses.csv's `top3` cell: the three likeliest classes and their probabilities, written as a
JSON list so that any class name survives (`:` and `;` included). Cells of the earlier
`name:prob;name:prob` form are still read (split on the last `:` of each part)."""

from __future__ import annotations

import json


def format_top3(pairs) -> str:
    """[(class, probability), ...] -> the cell."""
    return json.dumps([[str(c), round(float(p), 3)] for c, p in pairs], ensure_ascii=False)


def parse_top3(cell: str) -> list[tuple[str, float]]:
    """The cell -> [(class, probability), ...]; parts that cannot be read are left out."""
    cell = (cell or "").strip()
    if cell.startswith("["):
        try:
            return [(str(c), float(p)) for c, p in json.loads(cell)]
        except (ValueError, TypeError):
            return []
    out = []
    for part in filter(None, cell.split(";")):
        name, _, p = part.rpartition(":")
        try:
            out.append((name, float(p)))
        except ValueError:
            continue
    return out
