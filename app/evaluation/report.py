"""report.html: one self-contained page per run (figures embedded, no network, no scripts),
and `compare`: several runs' settings and metrics in one table."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

from ..core.files import read_json, write_text
from ..core.rundir import load_config
from .figures import FIGURES, figure_path
from .top_losses import parse_top3

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:28px 0 10px;border-bottom:2px solid #dde1e7;padding-bottom:4px}
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
"""


def _img(path: Path) -> str:
    mime = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _thumb(path: str, size: int = 96) -> str:
    from ..data.images import BadImage, open_rgb

    try:
        im = open_rgb(path, min_size=size)
    except BadImage:
        return ""
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return f'<img class="thumb" alt="{html.escape(Path(path).name)}" src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">'


class Raw(str):
    """HTML this module made (a thumbnail, a bold label): the one kind of cell not escaped."""


def _cell(c) -> str:
    return c if isinstance(c, Raw) else html.escape(str(c))


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """Every cell escaped, whatever its column (run files can be edited), except Raw ones."""
    h = "".join(f"<th>{_cell(c)}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{_cell(c)}</td>' if i in numeric else f"<td>{_cell(c)}</td>" for i, c in enumerate(r)
        ) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


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
    run = Path(run)
    cfg, meta = load_config(run)
    m = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else None
    sections = [_header(run, cfg, meta, m), _configuration(cfg, meta), _metrics(m), _history(run), _time(meta),
                _figures(run), _top_losses(run), _test_split(run, cfg), _skipped(run), _summary(run)]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{html.escape(run.name)}: report</title>'
            f'<link rel="icon" href="data:,"><style>{CSS}</style></head><body><main>{"".join(sections)}</main></body></html>')
    write_text(run / "report.html", page)
    return run / "report.html"


def _header(run: Path, cfg, meta: dict, m: dict | None) -> str:
    e = html.escape
    weights = meta.get("weights_reason") or f"weights {cfg.weights}"
    parts = [f"<h1>{e(run.name)}</h1>",
             f'<p class="sub">{e(cfg.command)} · preset {e(cfg.preset)} · {e(str(meta.get("device", "")))} · '
             f'{e(str(meta.get("created", "")))} · status {e(str(meta.get("status", "")))}</p>',
             f'<p class="weights"><b>Weights:</b> {e(weights)}</p>']
    if "plan" in meta:
        parts.append(f'<p class="sub"><b>Time budget:</b> {e(meta["plan"].get("summary", ""))}</p>')
    if m:
        parts.append(_cards(m, cfg))
    return "".join(parts)


def _cards(m: dict, cfg) -> str:
    e = html.escape
    cards = [("accuracy", m["accuracy"]), ("macro precision", m["precision_macro"]),
             ("macro recall", m["recall_macro"]), ("macro F1", m["f1_macro"])]
    if "tta" in m:
        cards.append(("accuracy with TTA", m["tta"]["accuracy"]))
    where = "test" if m.get("split") == "test" else "validation"
    over, n_cls = m.get("macro_over", len(m["per_class"])), len(m["per_class"])
    macro = "" if over == n_cls else f"; macro averages over the {over} of {n_cls} classes with {where} images"
    return ('<div class="cards">' + "".join(f'<div class="card"><b>{e(_pct(v))}</b><span>{e(k)}</span></div>'
                                            for k, v in cards) + "</div>"
            + f'<p class="sub">{e(str(m.get("model", "last")))} model, on {e(str(m["n"]))} {where} images at '
              f'{e(str(m.get("size", cfg.size)))} px{e(macro)}</p>')


def _configuration(cfg, meta: dict) -> str:
    conf = [[k, v] for k, v in cfg.to_dict().items()]
    conf += [[k, meta[k]] for k in ("data_fingerprint", "fit_seconds", "wall_seconds", "peak_rss_mb", "world_size")
             if k in meta]
    vers = [[k, v] for k, v in meta.get("versions", {}).items()]
    return (f'<h2>Configuration</h2><div class="cols">{_table(["setting", "value"], conf)}'
            f'{_table(["library", "version"], vers)}</div>')


def _metrics(m: dict | None) -> str:
    if not m:
        return ""
    rows = [[n, _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), v["support"]]
            for n, v in m["per_class"].items()]
    rows.append([Raw("<b>macro average</b>"), _pct(m["precision_macro"]), _pct(m["recall_macro"]),
                 _pct(m["f1_macro"]), m["n"]])
    table = _table(["class", "precision", "recall", "F1", "images"], rows, {1, 2, 3, 4})
    if len(rows) > 51:  # many classes: folded, so the page stays readable
        table = f"<details><summary>{len(rows) - 1} classes (open)</summary>{table}</details>"
    mc = [list(r) for r in m.get("most_confused", [])[:15]]
    return ("<h2>Metrics per class</h2>" + table + "<h2>Most confused pairs</h2>"
            + (_table(["actual", "predicted as", "images"], mc, {2}) if mc else "<p>none</p>"))


def _history(run: Path) -> str:
    rows = _csv(run / "history.csv")
    if not rows:
        return ""
    return "<h2>Training history</h2>" + _table(rows[0], [[_readable(c) for c in r] for r in rows[1:]],
                                                set(range(1, len(rows[0]) - 2)))


def _time(meta: dict) -> str:
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
    rows.append([Raw("<b>all</b>"), "", "", "", "", f"{planned:.1f}", f"{actual:.1f}"])
    return (f"<h2>Time budget</h2><p class=\"sub\">budget {budget:.0f} s, {html.escape(took)}; first plan "
            f"{plan['epochs']} epoch(s), predicted {plan['predicted_s']:.0f} s</p>"
            + _table(["epoch", "size", "validated", "epochs planned then", "batches", "planned s", "actual s"], rows,
                     {0, 1, 3, 4, 5, 6}))


def _figures(run: Path, split: str = "val") -> str:
    figs = [(f, figure_path(run, f.key, split)) for f in FIGURES if figure_path(run, f.key, split).is_file()]
    if not figs:
        return ""

    def figure(f, p):
        cap = html.escape(f.caption)
        return f'<figure><img alt="{cap}" src="{_img(p)}"><figcaption>{cap}</figcaption></figure>'

    small = [figure(f, p) for f, p in figs if not f.wide]
    return (f"<h{2 if split == 'val' else 3}>Figures</h{2 if split == 'val' else 3}>"
            + "".join(figure(f, p) for f, p in figs if f.wide)
            + (f'<div class="grid">{"".join(small)}</div>' if small else ""))


def _top_losses(run: Path) -> str:
    tl = run / "top_losses.csv"
    if not tl.is_file():
        return ""
    with open(tl, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:16]
    return "<h2>Top losses</h2>" + _table(["image", "file", "actual", "predicted", "probability", "loss", "top 3"], [
        [Raw(_thumb(r["path"])), Path(r["path"]).name, r["actual"], r["predicted"], r["probability"],
         r["loss"], ", ".join(f"{c} {p:.3f}" for c, p in parse_top3(r["top3"]))] for r in rows], {4, 5})


def _test_split(run: Path, cfg) -> str:
    """`evaluate --split test`: its own section, beside (never instead of) the validation results."""
    f = run / "metrics_test.json"
    if not f.is_file():
        return ""
    m = read_json(f)
    return ('<h2>Test split (never used to choose the model)</h2>' + _cards(m, cfg)
            + _metrics(m).replace("<h2>", "<h3>").replace("</h2>", "</h3>") + _figures(run, "test"))


def _skipped(run: Path) -> str:
    if not (run / "skipped.csv").is_file():
        return ""
    rows = _csv(run / "skipped.csv")[1:]
    return (f"<h2>Skipped files ({len(rows)})</h2>"
            + (_table(["path", "reason"], [r[:2] for r in rows[:200]]) if rows else "<p>none</p>"))


def _summary(run: Path) -> str:
    if not (run / "summary.txt").is_file():
        return ""
    return ("<h2>learn.summary()</h2><pre style='background:#fff;border:1px solid #dde1e7;padding:10px;"
            f"overflow:auto;font-size:12px'>{html.escape((run / 'summary.txt').read_text(encoding='utf-8'))}</pre>")
