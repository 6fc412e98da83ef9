"""The CSV layout (`--labels FILE.csv`): fastai's from_csv conventions, `fname,label[,is_valid]`,
fname relative to ROOT; other columns are ignored, as fastai ignores them. A multi-label CSV has
several labels in the cell, split on `;` or `|` (found in the file and said in the layout line), or
on a space when `--label-delim " "` says so; an empty cell there is an image with none of the labels. What spreadsheets and
other systems write is read as meant (is_valid 1.0 from pandas, Windows backslashes, NFD names from
macOS), each said in a note; every problem names the rows and how many; nothing else is guessed."""

from __future__ import annotations

import csv
import os
import unicodedata
from pathlib import Path

from ..core.errors import DataError

COLUMNS = {"fname": ("fname", "file", "filename", "path", "image"), "label": ("label", "labels", "class", "tags"),
           "is_valid": ("is_valid", "valid")}
TRUE, FALSE = {"1", "1.0", "true", "yes", "y", "t"}, {"0", "0.0", "false", "no", "n", "f", ""}
MULTI = (";", "|")  # label delimiters of multi-label CSVs


def _rows_text(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return f"{len(rows)} row(s): {shown}{' ...' if len(rows) > limit else ''}"


def _columns(header: list[str], path: Path) -> tuple[dict[str, int], list[str]]:
    """(column -> index, the other columns' names: ignored)."""
    found, other = {}, []
    for i, name in enumerate(header):
        key = next((k for k, names in COLUMNS.items() if name.strip().lower() in names), None)
        if key is None or key in found:
            other.append(name)
        else:
            found[key] = i
    if "fname" not in found or "label" not in found:
        raise DataError(f"{path}: columns {', '.join(header) or '(none)'} have no "
                        f"{' and no '.join(k for k in ('fname', 'label') if k not in found)} column "
                        "(expected fname,label[,is_valid]; other columns are ignored)")
    return found, other


def _split(value: str, row: int, path: Path) -> str:
    v = value.strip().lower()
    if v in TRUE:
        return "val"
    if v in FALSE:
        return "train"
    raise DataError(f"{path} row {row}: is_valid {value!r} is not true/false (or 1/0)")


def _parse(path: Path) -> tuple[list[tuple[int, str, str, str | None]], list[str]]:
    """((row number, fname, label, split or None) for every data row, the ignored columns)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read labels file {path}: {e}") from None
    if not table:
        raise DataError(f"{path} is empty (expected a header fname,label[,is_valid])")
    cols, other = _columns(table[0], path)
    out = []
    for n, r in enumerate(table[1:], start=2):
        if not any(c.strip() for c in r):
            continue
        r = r + [""] * (len(table[0]) - len(r))
        split = _split(r[cols["is_valid"]], n, path) if "is_valid" in cols else None
        label = unicodedata.normalize("NFC", r[cols["label"]].strip())
        out.append((n, r[cols["fname"]].strip(), label, split))
    return out, other


def on_disk(root: Path, fname: str) -> str | None:
    """`fname` as it names a file under `root`: as written, else with Windows backslashes as folders,
    else in the other Unicode normal form (NFC / NFD); None when no spelling names a file."""
    slashed = fname.replace("\\", "/")
    spellings = [fname, slashed] + [unicodedata.normalize(form, slashed) for form in ("NFC", "NFD")]
    return next((f for f in dict.fromkeys(spellings) if os.path.lexists(root / f)), None)


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


def _check(root: Path, path: Path, rows) -> list[tuple[int, str, str, str | None]]:
    """The rows, each fname as it names its file on disk; DataError naming the rows of any problem."""
    def fail(what, bad):
        if bad:
            raise DataError(f"{path}: {what} in {_rows_text(bad)}")

    multi = isinstance(rows[0][2], tuple)
    fail("an empty fname" if multi else "an empty fname or label", [n for n, f, lab, _ in rows if not f or
                                                                    (not lab and not multi)])
    fail("a fname outside ROOT (absolute, or with ..)", [n for n, f, _, _ in rows if _outside(f)])
    spelt = [(n, on_disk(root, f), lab, s) for n, f, lab, s in rows]
    fail(f"a file that does not exist under {root}", [n for n, f, _, _ in spelt if f is None])
    seen, dup = {}, []
    for n, f, _, _ in spelt:
        key = _identity(root / f)  # ./a.jpg and a.jpg, A.jpg and a.jpg on macOS, a link to it: one file
        if key in seen:
            dup.append(n)
        seen[key] = n
    fail("a file listed twice (the same file under two spellings counts once)", dup)
    return spelt


def _outside(f: str) -> bool:
    p = Path(f.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or f.startswith("\\") or f[1:2] == ":"  # C:\\...


def _identity(p: Path):
    try:
        st = os.stat(p)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.normcase(os.path.normpath(p))


def _notes(rows, spelt, other: list[str]) -> list[str]:
    notes = [f"column(s) ignored: {', '.join(other)}"] if other else []
    fixed = sum(f != g for (_, f, _, _), (_, g, _, _) in zip(rows, spelt))
    if fixed:
        notes.append(f"{fixed} fname(s) read with backslashes as folders or in the other Unicode form")
    labels = {lab for _, _, lab, _ in rows if isinstance(lab, str)}
    joined = sorted(lab for lab in labels if _joins_labels(lab, labels))
    if joined:
        notes.append(f"label(s) {', '.join(repr(j) for j in joined[:3])} are other labels joined by spaces; each is "
                     "read as one class (a space is part of a name)")
    return notes


def label_delimiter(rows, path: Path, delim: str | None = None) -> str:
    """The multi-label delimiter: `delim` as given (--label-delim), else `;` or `|` when the file's
    labels hold one (both: one line), else "" (one label per image)."""
    if delim:
        return delim
    found = [d for d in MULTI if any(d in lab for _, _, lab, _ in rows)]
    if len(found) > 1:
        raise DataError(f"{path}: labels hold both ';' and '|'; one delimiter per file (or --label-delim)")
    return found[0] if found else ""


def split_labels(rows, delim: str, path: Path) -> list:
    """Each row's label cell as a tuple of labels (sorted, unique); a part empty after splitting
    ("a;;b", "a;") is one line naming the rows. An empty cell: no label (a "none of these" image)."""
    out, bad = [], []
    for n, f, cell, s in rows:
        parts = [p.strip() for p in cell.split(delim)] if cell.strip() else []
        if any(not p for p in parts):
            bad.append(n)
        out.append((n, f, tuple(sorted(set(parts))), s))
    if bad:
        raise DataError(f"{path}: a label that is empty after splitting on {delim!r} in {_rows_text(bad)}")
    return out


def read_labels(root: Path, labels, delim: str | None = None) -> tuple[Path, list, list[str], str]:
    """(the labels file, [(fname, label or tuple of labels, split or "")], notes for the layout line,
    the multi-label delimiter or "") of a checked CSV."""
    path = Path(labels).expanduser()
    if not path.is_file() and (root / path).is_file():
        path = root / path
    if not path.is_file():
        raise DataError(f"labels file not found: {labels} (expected a CSV of fname,label[,is_valid])")
    rows, other = _parse(path)
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    delim = label_delimiter(rows, path, delim)
    if delim:
        rows = split_labels(rows, delim, path)
    spelt = _check(root, path, rows)
    n = len({lab for _, _, cell, _ in rows for lab in (cell if delim else [cell])})
    if n < 2:
        raise DataError(f"{path} has {n} label(s); a classifier needs at least 2")
    return path, [(f, lab, s or "") for _, f, lab, s in spelt], _notes(rows, spelt, other), delim


def _records(path: Path) -> tuple[list[str], list[list[str]], str, str]:
    """(each record's raw text, its cells, the newline, the encoding) of a labels file: untouched
    records are written back byte for byte."""
    raw = path.read_bytes()
    enc = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
    text = raw.decode(enc)
    lines = text.splitlines(keepends=True)
    reader, out_raw, out_cells, at = csv.reader(lines), [], [], 0
    for cells in reader:
        out_raw.append("".join(lines[at:reader.line_num]))
        out_cells.append(cells)
        at = reader.line_num
    return out_raw, out_cells, "\r\n" if "\r\n" in text else "\n", enc


def _line(cells: list[str], newline: str) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerow(cells)
    return buf.getvalue()


def _publish(path: Path, raw: list[str], enc: str) -> None:
    """The new labels file under a temporary name, fsynced, then renamed over the old one: a kill
    leaves the old file or the new one, and a hard link to the old one keeps the old content."""
    tmp = path.with_name(f".{path.name}.part{os.getpid()}")
    with open(tmp, "x", encoding=enc, newline="") as f:
        f.write("".join(raw))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    except OSError:
        pass
    os.replace(tmp, path)


def _row_of(root: Path, path: Path, cells: list[list[str]], col: int) -> int | None:
    """The index of the record naming `path` (however its fname is spelt), or None."""
    want = _identity(path)
    for i, r in enumerate(cells[1:], start=1):
        f = on_disk(root, r[col].strip()) if len(r) > col and r[col].strip() else None
        if f is not None and _identity(root / f) == want:
            return i
    return None


def edit_labels(path: Path, root: Path, edits: list[dict], before=lambda rows: None) -> list[dict]:
    """Apply review's edits to the labels file (`{"file", "new"}`: new label, or None to delete the
    row) as one atomic rewrite; `before(rows)` is called with what undo needs (each row's index,
    cells and labels) before the file changes, so a journal holds it whatever happens next."""
    raw, cells, newline, enc = _records(path)
    cols, _ = _columns(cells[0], path)
    done = []
    for e in edits:
        i = _row_of(root, Path(e["file"]), cells, cols["fname"])
        if i is None:
            continue
        done.append({"file": e["file"], "index": i, "cells": list(cells[i]), "old": cells[i][cols["label"]],
                     "new": e["new"]})
        if e["new"] is None:
            raw[i], cells[i] = "", [""] * len(cells[i])  # a gap keeps the later indices; dropped on write
        else:
            cells[i][cols["label"]] = e["new"]
            raw[i] = _line(cells[i], newline)
    before(done)
    _publish(path, raw, enc)
    return done


def revert_labels(path: Path, root: Path, done: list[dict]) -> int:
    """Undo edit_labels' rows where the file still says what the edit wrote: a deleted row goes back
    where it was (in the order of the rows, so each lands at its old index) once its image is back in
    place, a label back to what it was. Safe to run twice."""
    raw, cells, newline, enc = _records(path)
    cols, _ = _columns(cells[0], path)
    back = 0
    for e in sorted(done, key=lambda e: e["index"]):
        i = _row_of(root, Path(e["file"]), cells, cols["fname"])
        if e["new"] is None and i is None and os.path.lexists(e["file"]):
            at = min(e["index"], len(raw))
            if at == len(raw) and not raw[-1].endswith(("\n", "\r")):
                raw[-1] += newline
            raw.insert(at, _line(e["cells"], newline))
            cells.insert(at, e["cells"])
            back += 1
        elif e["new"] is not None and i is not None and cells[i][cols["label"]] == e["new"]:
            cells[i][cols["label"]] = e["old"]
            raw[i] = _line(cells[i], newline)
            back += 1
    if back:
        _publish(path, raw, enc)
    return back
