"""report.html: one self-contained page per run (figures embedded, no network, no scripts),
rendered from a Jinja2 template (templates/report.html.j2) with autoescape on: every value read
from the run's files is shown as text; only what this module makes (embedded images, the
template's own sections) is HTML. `compare`: several runs' settings and metrics in one table."""

from __future__ import annotations

import base64
import csv
import io
from functools import cache
from pathlib import Path

from markupsafe import Markup

from ..core.files import read_json, write_text
from ..core.rundir import load_config
from .figures import FIGURES, figure_path
from .top_losses import parse_top3

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:28px 0 10px;border-bottom:2px solid #dde1e7;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 8px}
.sub{color:#5b6475;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 18px;min-width:140px}
.card b{display:block;font-size:24px} .card span{color:#5b6475;font-size:13px}
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7;font-size:13.5px}
td,th{padding:4px 10px;border-bottom:1px solid #eef0f3;text-align:left;vertical-align:top}
th{background:#eef1f5} td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:0 0 18px;padding:12px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#5b6475;font-size:13px;margin-top:6px;text-align:center}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:16px}
.thumb{width:72px;height:72px;object-fit:cover;border-radius:4px}
.cols{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.weights{background:#fff;border-left:4px solid #3b6fd8;padding:8px 12px;margin:0 0 16px}
.note{background:#fff8e6;border-left:4px solid #e0a800;padding:8px 12px}
pre.summary{background:#fff;border:1px solid #dde1e7;padding:10px;overflow:auto;font-size:12px}
"""


@cache
def _macros():
    """The template's macros (one per section), from the package's templates/ folder."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("app.evaluation", "templates"), autoescape=select_autoescape(["j2"]),
                      undefined=StrictUndefined)
    return env.get_template("report.html.j2").module


def render(section: str, *args, **kw) -> Markup:
    """One section of the page: the template's macro of that name, its values escaped."""
    return Markup(getattr(_macros(), section)(*args, **kw))


def _img(path: Path) -> str:
    mime = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def thumb(path: str, size: int = 96) -> Markup | str:
    """A small JPEG of an image file, embedded (empty when it cannot be read)."""
    from markupsafe import escape

    from ..data.images import BadImage, open_rgb

    try:
        im = open_rgb(path, min_size=size)
    except BadImage:
        return ""
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return Markup(f'<img class="thumb" alt="{escape(Path(path).name)}" '
                  f'src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">')


def _pct(x) -> str:
    """A fraction as a percentage ("-" for none); anything else (an edited file) as it is, to be escaped."""
    if x is None:
        return "-"
    try:
        return f"{100 * float(x):.2f}%"
    except (TypeError, ValueError):
        return str(x)


def _readable(value: str) -> str:
    """A CSV cell as a person reads it: whole numbers as integers, others to 4 decimals."""
    try:
        x = float(value)
    except ValueError:
        return value
    if x.is_integer():
        return str(int(x))
    return f"{x:.4f}"


def _csv(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def write_report(run: str | Path) -> Path:
    """report.html: one self-contained page (figures embedded, no network, no scripts)."""
    from .figures import AUDIT_KEYS

    run = Path(run)
    cfg, meta = load_config(run)
    m = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else None
    sections = [_header(run, cfg, meta, m), _audit(run), _configuration(cfg, meta), _metrics(m), _history(run),
                _time(meta), _figures(run, exclude=AUDIT_KEYS), _top_losses(run), _test_split(run, cfg), _skipped(run),
                _summary(run)]
    page = render("page", run.name, Markup(CSS), [s for s in sections if s])
    write_text(run / "report.html", str(page))
    return run / "report.html"


def _header(run: Path, cfg, meta: dict, m: dict | None) -> Markup:
    weights = meta.get("weights_reason") or f"weights {cfg.weights}"
    sub = (f'{meta.get("command") or cfg.command} · preset {cfg.preset} · {meta.get("device", "")} · {meta.get("created", "")} · '
           f'status {meta.get("status", "")}')
    plan = meta["plan"].get("summary", "") if "plan" in meta else ""
    return render("header", run.name, sub, weights, plan, _cards(m, cfg) if m else "")


def _cards(m: dict, cfg) -> Markup:
    cards = [("accuracy", m["accuracy"]), ("macro precision", m["precision_macro"]),
             ("macro recall", m["recall_macro"]), ("macro F1", m["f1_macro"])]
    if m.get("task") == "multi-label":  # accuracy: the exact label set
        cards = [("exact-set accuracy", m["accuracy"])] + cards[1:] + [("micro F1", m["f1_micro"]), ("mAP", m["map"])]
    if "tta" in m:
        cards.append(("accuracy with TTA", m["tta"]["accuracy"]))
    where = "test" if m.get("split") == "test" else "validation"
    over, n_cls = m.get("macro_over", len(m["per_class"])), len(m["per_class"])
    macro = "" if over == n_cls else f"; macro averages over the {over} of {n_cls} classes with {where} images"
    note = f'{m.get("model", "last")} model, on {m["n"]} {where} images at {m.get("size", cfg.size)} px{macro}'
    return render("cards", [(k, _pct(v)) for k, v in cards], note)


def _configuration(cfg, meta: dict) -> Markup:
    conf = [[k, v] for k, v in cfg.to_dict().items()]
    conf += [[k, meta[k]] for k in ("data_fingerprint", "fit_seconds", "wall_seconds", "peak_rss_mb", "world_size")
             if k in meta]
    vers = [[k, v] for k, v in meta.get("versions", {}).items()]
    return render("configuration", conf, vers)


def _metrics(m: dict | None, level: int = 2) -> Markup | str:
    if not m:
        return ""
    if m.get("task") == "multi-label":
        return _metrics_multi(m, level)
    rows = [[n, _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), v["support"]]
            for n, v in m["per_class"].items()]
    rows.append([Markup("<b>macro average</b>"), _pct(m["precision_macro"]), _pct(m["recall_macro"]),
                 _pct(m["f1_macro"]), m["n"]])
    mc = [list(r) for r in m.get("most_confused", [])[:15]]
    return render("metrics", rows, len(rows) > 51, mc, level)  # many classes: folded, so the page stays readable


def _metrics_multi(m: dict, level: int) -> Markup:
    rows = [[n, f'{v["threshold"]:.2f}', _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), _pct(v.get("ap")),
             v["support"]] for n, v in m["per_class"].items()]
    rows.append([Markup("<b>macro average</b>"), "", _pct(m["precision_macro"]), _pct(m["recall_macro"]),
                 _pct(m["f1_macro"]), _pct(m["map"]), m["n"]])
    return render("metrics_multi", rows, len(rows) > 51, level)


def _history(run: Path) -> Markup | str:
    rows = _csv(run / "history.csv")
    if not rows:
        return ""
    return render("history", rows[0], [[_readable(c) for c in r] for r in rows[1:]], tuple(range(1, len(rows[0]) - 2)))


def _time(meta: dict) -> Markup | str:
    """--time: the budget, what the command took, and every epoch's planned and actual seconds
    (the keeper plans each epoch when it starts; the last one may end early at the deadline)."""
    kept, plan = meta.get("time_keeper"), meta.get("plan")
    if not kept or not plan:
        return ""
    budget, wall = plan["budget_s"], meta.get("wall_seconds")
    took = f"took {wall:.0f} s ({100 * wall / budget:.1f} %)" if wall else "still running"
    rows = [[r["epoch"], r["size"], "yes" if r["validated"] else "-", r["plan_epochs"], r["batches"],
             f"{r['planned_s']:.1f}", f"{r['actual_s']:.1f}"] for r in kept.get("epochs", [])]
    planned, actual = (sum(r[k] for r in kept.get("epochs", [])) for k in ("planned_s", "actual_s"))
    rows.append([Markup("<b>all</b>"), "", "", "", "", f"{planned:.1f}", f"{actual:.1f}"])
    summary = f"budget {budget:.0f} s, {took}; first plan {plan['epochs']} epoch(s), predicted {plan['predicted_s']:.0f} s"
    return render("time_budget", summary, rows)


def _figures(run: Path, split: str = "val", keys=None, exclude=(), title: str = "Figures",
             level: int | None = None) -> Markup | str:
    """The figures of the table that this run has (`keys`: only those), wide ones first."""
    figs = [(f, figure_path(run, f.key, split)) for f in FIGURES
            if (keys is None or f.key in keys) and f.key not in exclude and figure_path(run, f.key, split).is_file()]
    if not figs:
        return ""
    wide = [(_img(p), f.caption) for f, p in figs if f.wide]
    small = [(_img(p), f.caption) for f, p in figs if not f.wide]
    return render("figures", title, level or (2 if split == "val" else 3), wide, small)


def _top_losses(run: Path) -> Markup | str:
    tl = run / "top_losses.csv"
    if not tl.is_file():
        return ""
    with open(tl, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:16]
    if rows and "missed" in rows[0]:  # multi-label: label sets, what was missed and what was wrong
        return render("top_losses_multi", [[thumb(r["path"]), Path(r["path"]).name, r["actual"], r["predicted"],
                                            r["missed"], r["wrong"], r["loss"]] for r in rows])
    return render("top_losses", [
        [thumb(r["path"]), Path(r["path"]).name, r["actual"], r["predicted"], r["probability"],
         r["loss"], ", ".join(f"{c} {p:.3f}" for c, p in parse_top3(r["top3"]))] for r in rows])


def _test_split(run: Path, cfg) -> Markup | str:
    """`evaluate --split test`: its own section, beside (never instead of) the validation results."""
    f = run / "metrics_test.json"
    if not f.is_file():
        return ""
    m = read_json(f)
    return render("test_split", _cards(m, cfg), _metrics(m, level=3), _figures(run, "test"))


def _skipped(run: Path) -> Markup | str:
    if not (run / "skipped.csv").is_file():
        return ""
    rows = _csv(run / "skipped.csv")[1:]
    return render("skipped", [r[:2] for r in rows[:200]], len(rows))


def _summary(run: Path) -> Markup | str:
    if not (run / "summary.txt").is_file():
        return ""
    return render("summary", (run / "summary.txt").read_text(encoding="utf-8"))


AUDIT_ROWS = 25  # findings of each kind shown in the report; audit.csv has them all


def _audit(run: Path) -> Markup | str:
    """`audit`: what it found (worst first, with thumbnails), how, and its figures."""
    from .figures import AUDIT_KEYS
    from .findings import read_findings, summary_context

    if not (run / "audit.json").is_file():
        return ""
    by_kind = read_findings(run)
    ctx = summary_context(run, by_kind)
    rows = {
        "label_issue": lambda f: [thumb(f.path), Path(f.path).name, f.split, f.given, f.suggested, f"{f.score:.4f}",
                                  f.detail],
        "leakage": lambda f: [thumb(f.path), thumb(f.other), Path(f.path).name, Path(f.other).name, f"{f.score:.4f}"],
        "near_duplicate": lambda f: [thumb(f.path), thumb(f.other), f.split, Path(f.path).name, Path(f.other).name,
                                     f"{f.score:.4f}"],
        "low_quality": lambda f: [thumb(f.path), Path(f.path).name, f.split, f.detail, f"{f.score:.3f}"],
    }
    short = {"label_issue": "label", "leakage": "leak", "near_duplicate": "dup", "low_quality": "low"}
    for kind, make in rows.items():
        found = by_kind.get(kind, [])
        ctx[f"{short[kind]}_rows"] = [make(f) for f in found[:AUDIT_ROWS]]
        ctx[f"{short[kind]}_more"] = max(0, len(found) - AUDIT_ROWS)
    return render("audit", ctx) + _figures(run, keys=AUDIT_KEYS, title="Audit figures", level=3)
