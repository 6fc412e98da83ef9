"""Class names: the key a class is stored under (a folder name or a CSV label) and the human name
shown for it everywhere. A `words.txt` at ROOT (`wnid<TAB>names`, as ImageNet and Tiny ImageNet
ship it: the first name before a comma) or a `classes.csv` (`folder,name`) names the classes;
Imagenette's synsets have built-in names; any other key is its own name. Names are unique (the
model's vocab): a repeated one gets its key added."""

from __future__ import annotations

import csv
from pathlib import Path

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
NAME_FILES = ("words.txt", "classes.csv")


def human_name(folder: str) -> str:
    return IMAGENETTE.get(folder, folder)


def _words_txt(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, names = line.partition("\t")
        if key.strip() and names.strip():
            out[key.strip()] = names.split(",")[0].strip()
    return out


def _classes_csv(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if len(r) >= 2]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["folder", "name"]:
        rows = rows[1:]
    return {r[0].strip(): r[1].strip() for r in rows if r[0].strip() and r[1].strip()}


def read_names(root: Path) -> tuple[dict[str, str], str]:
    """({key: name}, the file they came from or '') from ROOT's words.txt or classes.csv."""
    for name, reader in zip(NAME_FILES, (_words_txt, _classes_csv)):
        f = Path(root) / name
        if f.is_file():
            try:
                return reader(f), name
            except (OSError, csv.Error, UnicodeDecodeError):
                return {}, ""
    return {}, ""


def class_names(root: Path, keys: list[str]) -> tuple[list[str], str]:
    """The human name of each class key, in order, unique; and where the names came from."""
    given, source = read_names(root)
    names = [given.get(k) or human_name(k) for k in keys]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n} ({k})" if seen[n] > 1 else n for n, k in zip(names, keys)], source
