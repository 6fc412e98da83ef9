"""Class names: the folder (or label) a class is stored under and the human name shown for it.
Imagenette's synsets have their built-in names; any other folder name is its own label."""

from __future__ import annotations

IMAGENETTE = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


def human_name(folder: str) -> str:
    return IMAGENETTE.get(folder, folder)
