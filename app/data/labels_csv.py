"""The CSV layout (`--labels FILE.csv`): fastai's from_csv conventions, `fname,label[,is_valid]`,
fname relative to ROOT. Every problem names the rows and how many; nothing is guessed."""

from __future__ import annotations

import csv
from pathlib import Path

from ..core.errors import DataError

COLUMNS = {"fname": ("fname", "file", "filename", "path", "image"), "label": ("label", "class"),
           "is_valid": ("is_valid", "valid")}
TRUE, FALSE = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f", ""}
MULTI = (";", "|")  # label delimiters of multi-label CSVs


def _rows_text(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return f"{len(rows)} row(s): {shown}{' ...' if len(rows) > limit else ''}"


def _columns(header: list[str], path: Path) -> dict[str, int]:
    found, unknown = {}, []
    for i, name in enumerate(header):
        key = next((k for k, names in COLUMNS.items() if name.strip().lower() in names), None)
        if key is None or key in found:
            unknown.append(name)
        else:
            found[key] = i
    if unknown or "fname" not in found or "label" not in found:
        raise DataError(f"{path}: columns {', '.join(header) or '(none)'} are not fname,label[,is_valid]"
                        f"{f' (unknown: {chr(44).join(unknown)})' if unknown else ''}")
    return found


def _split(value: str, row: int, path: Path) -> str:
    v = value.strip().lower()
    if v in TRUE:
        return "val"
    if v in FALSE:
        return "train"
    raise DataError(f"{path} row {row}: is_valid {value!r} is not true/false (or 1/0)")


def _parse(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(row number, fname, label, split or None) for every data row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read labels file {path}: {e}") from None
    if not table:
        raise DataError(f"{path} is empty (expected a header fname,label[,is_valid])")
    cols = _columns(table[0], path)
    out = []
    for n, r in enumerate(table[1:], start=2):
        if not any(c.strip() for c in r):
            continue
        r = r + [""] * (len(table[0]) - len(r))
        split = _split(r[cols["is_valid"]], n, path) if "is_valid" in cols else None
        out.append((n, r[cols["fname"]].strip(), r[cols["label"]].strip(), split))
    return out


def _joins_labels(label: str, labels: set[str]) -> bool:
    """True when a label is two or more other labels joined by spaces (fastai's space-delimited
    multi-label CSVs: "haze primary"); "English springer" alone is one label."""
    words = label.split()
    reach = {0: 0}  # words consumed -> the fewest labels that cover them
    for i in range(len(words)):
        if i in reach:
            for j in range(i + 1, len(words) + 1):
                part = " ".join(words[i:j])
                if part in labels and part != label:
                    reach[j] = min(reach.get(j, 99), reach[i] + 1)
    return reach.get(len(words), 0) >= 2


def _check(root: Path, path: Path, rows) -> None:
    def fail(what, bad):
        if bad:
            raise DataError(f"{path}: {what} in {_rows_text(bad)}")

    fail("an empty fname or label", [n for n, f, lab, _ in rows if not f or not lab])
    fail("a fname outside ROOT (absolute, or with ..)", [n for n, f, _, _ in rows
                                                        if Path(f).is_absolute() or ".." in Path(f).parts])
    labels = {lab for _, _, lab, _ in rows}
    multi = [n for n, _, lab, _ in rows if any(d in lab for d in MULTI) or _joins_labels(lab, labels)]
    fail("more than one label per image (multi-label is not supported: one class per image)", multi)
    seen, dup = set(), []
    for n, f, _, _ in rows:
        key = Path(f).as_posix()  # ./a.jpg and a.jpg are one file
        if key in seen:
            dup.append(n)
        seen.add(key)
    fail("a file listed twice", dup)
    fail(f"a file that does not exist under {root}", [n for n, f, _, _ in rows if not (root / f).exists()])


def read_labels(root: Path, labels) -> tuple[Path, list[tuple[str, str, str]]]:
    """(the labels file, [(fname, label, split or "")]) of a checked CSV."""
    path = Path(labels).expanduser()
    if not path.is_file() and (root / path).is_file():
        path = root / path
    if not path.is_file():
        raise DataError(f"labels file not found: {labels} (expected a CSV of fname,label[,is_valid])")
    rows = _parse(path)
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    _check(root, path, rows)
    if len({lab for _, _, lab, _ in rows}) < 2:
        raise DataError(f"{path} has {len({lab for _, _, lab, _ in rows})} label(s); a classifier needs at least 2")
    return path, [(f, lab, s or "") for _, f, lab, s in rows]
