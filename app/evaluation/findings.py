"""What `audit` found, as files in its folder: audit.csv (one row per finding, every kind, worst
first within each kind) and audit.json (the counts, how each was found, the folds). Written by the
audit layer, read here by the report, the figures and `review --audit`.

Kinds: `label_issue` (cleanlab: the given label is likely wrong; `score` is cleanlab's label
quality, lower is worse), `leakage` (a validation image with a near copy in training: `path` the
validation image, `other` the training one; `score` their cosine similarity), `near_duplicate`
(a pair inside one split) and `low_quality` (cleanvision: `detail` says blurry, dark,
low_information or odd_aspect_ratio)."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..core.files import read_json, write_text

AUDIT_CSV, AUDIT_JSON = "audit.csv", "audit.json"
KINDS = ("label_issue", "leakage", "near_duplicate", "low_quality")


@dataclass
class Finding:
    kind: str
    split: str
    path: str
    given: str = ""
    suggested: str = ""
    score: float = 0.0
    other: str = ""  # the pair's other image (leakage: the training copy)
    other_split: str = ""
    detail: str = ""  # label issue: p(suggested); low quality: the issue type
    cam: str = ""  # Grad-CAM overlay of `path`, relative to the audit folder


FIELDS = [f.name for f in fields(Finding)]


def write_findings(run: Path, findings: list[Finding]) -> Path:
    """audit.csv, whole or not at all."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, FIELDS)
    w.writeheader()
    for f in findings:
        w.writerow({**asdict(f), "score": f"{f.score:.6f}"})
    write_text(Path(run) / AUDIT_CSV, buf.getvalue())
    return Path(run) / AUDIT_CSV


def read_findings(run: Path) -> dict[str, list[Finding]]:
    """audit.csv by kind, in the file's order (worst first)."""
    out: dict[str, list[Finding]] = {k: [] for k in KINDS}
    f = Path(run) / AUDIT_CSV
    if not f.is_file():
        return out
    with open(f, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            try:
                score = float(r.get("score") or 0)
            except ValueError:  # an edited file: the row is still shown, its score as 0
                score = 0.0
            item = Finding(**{**{k: r.get(k) or "" for k in FIELDS}, "score": score})
            out.setdefault(item.kind, []).append(item)
    return out


def summary_context(run: Path, by_kind: dict[str, list[Finding]]) -> dict:
    """The numbers the report's audit section says, from audit.json."""
    a = read_json(Path(run) / AUDIT_JSON)
    leak, folds = a.get("leakage", {}), a.get("folds", {})
    acc_all, acc_clean = leak.get("accuracy_all"), leak.get("accuracy_without_leaked")
    cards = [("label issues", len(by_kind["label_issue"])), ("leaked validation images", leak.get("n_leaked", 0)),
             ("near-duplicate pairs", len(by_kind["near_duplicate"])), ("low-quality images", len(by_kind["low_quality"]))]
    if acc_all is not None:
        cards += [("validation accuracy", f"{100 * acc_all:.2f}%"),
                  ("without leaked images", f"{100 * acc_clean:.2f}%" if acc_clean is not None else "-")]
    return {
        "folder": str(run), "sub": a.get("summary", ""), "cards": cards, "cards_note": leak.get("note", ""),
        "n_label": len(by_kind["label_issue"]), "n_leak": leak.get("n_leaked", 0),
        "n_dup": len(by_kind["near_duplicate"]), "n_low": len(by_kind["low_quality"]),
        "label_how": a.get("labels", {}).get("how", ""), "leak_how": leak.get("how", ""),
        "low_how": a.get("quality", {}).get("how", ""),
        "fold_rows": [[r["fold"], r["run"], r["trained_on"], r["held_out"],
                       f"{100 * r['accuracy']:.2f}%" if r.get("accuracy") is not None else "-", r.get("epochs", "-"),
                       f"{r['seconds']:.0f}" if r.get("seconds") is not None else "-"] for r in folds.get("runs", [])],
    }
