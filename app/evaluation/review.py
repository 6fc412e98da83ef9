"""Interactive top-loss review in any terminal (fastai's ImageClassifierCleaner needs Jupyter).

Step through the images with the highest loss: the image drawn in the terminal (Sixel or
Kitty graphics where supported, coloured half-cells otherwise), actual and predicted class,
probability, loss, top 3. Keys keep, relabel, mark for removal, go back, quit, and `c` toggles the
Grad-CAM overlay (where the model looked). Every decision is appended to RUN/decisions.csv at once
(the last row per file wins), so a killed session loses nothing and the next one resumes at the
first undecided image.

`review AUDIT --audit` steps through what `audit` found instead: label issues worst first, then
each validation image that leaks from training beside its training copy, then near-duplicate pairs
(a decision is about the first image of a pair), with the same keys and decisions.csv.

What `--apply` and `--undo` then do to the dataset is data/edits.py's job.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, OptionList, SelectionList, Static

from ..core.errors import NothingToDo
from ..core.rundir import load_config
from ..data.edits import DECISIONS, Decisions, dataset_of, rebase
from .top_losses import parse_top3


@dataclass
class Entry:
    path: str
    actual: str
    predicted: str
    probability: float
    loss: float  # top losses: the loss; audit findings: their score (label quality, cosine similarity)
    top3: str
    split: str = "val"
    kind: str = "top_loss"  # or an audit finding's kind
    other: str = ""  # a pair's second image, drawn beside the first
    cam: str = ""  # a Grad-CAM overlay made by the audit (else computed when asked)


REVIEWED_KINDS = ("label_issue", "leakage", "near_duplicate")  # low-quality images are listed, not reviewed
KIND_WORDS = {"label_issue": "label issue · ", "leakage": "leakage · ", "near_duplicate": "near duplicate · "}


def load_audit_entries(run: Path) -> list[Entry]:
    """audit.csv's label issues (worst first), then leakage pairs and near-duplicate pairs (most similar first)."""
    from ..core.errors import RunError
    from .findings import AUDIT_CSV, read_findings

    run = Path(run)
    if not (run / AUDIT_CSV).is_file():
        raise RunError(f"{run} has no {AUDIT_CSV}: audit it first (python -m app audit RUN_OR_DATA)")
    by_kind = read_findings(run)
    out = []
    for kind in REVIEWED_KINDS:
        for f in by_kind.get(kind, []):
            prob = float(f.detail) if kind == "label_issue" and _is_number(f.detail) else 0.0
            out.append(Entry(f.path, f.given, f.suggested or f.detail, prob, f.score, "", f.split, kind, f.other,
                             str(run / f.cam) if f.cam else ""))
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_entries(run: Path, include_train: bool = False, data=None, labels=None) -> list[Entry]:
    """Worst first: RUN/top_losses.csv (computed now if evaluate has not written it), each path where
    the file is now (`data`: the dataset, if it moved)."""
    run = Path(run)
    f = run / "top_losses.csv"
    if not f.is_file():
        from .evaluate import evaluate_run

        evaluate_run(run, data=data, labels=labels)
    entries = _read_losses(f, "val")
    if include_train:
        ft = run / "top_losses_train.csv"
        if not ft.is_file():
            write_train_losses(run, ft, data, labels)
        entries += _read_losses(ft, "train")
    if data:
        cfg, old = dataset_of(run, data, labels)
        entries = [dataclasses.replace(e, path=str(rebase(e.path, old, Path(cfg.data)))) for e in entries]
    return sorted(entries, key=lambda e: -e.loss)


def _read_losses(f: Path, split: str) -> list[Entry]:
    with open(f, newline="", encoding="utf-8") as fh:
        return [Entry(r["path"], r["actual"], r["predicted"], float(r["probability"]), float(r["loss"]), r["top3"], split)
                for r in csv.DictReader(fh)]


def write_train_losses(run: Path, out: Path, data=None, labels=None) -> None:
    """One pass over the training images without augmentation (they are the labels most worth checking)."""
    from ..data.loaders import split_dl
    from ..model.learner import load_run
    from .evaluate import Interp, write_top_losses

    learn, cfg, ds = load_run(run, log=lambda *_: None, data=data, labels=labels)
    # the training images through the validation transforms (no augmentation, the validation resize):
    # the training dataset itself would bring the training pipeline's random crops with it
    write_top_losses(Interp.compute(learn, split_dl(learn.dls, ds, "train")), out, ds)


def run_tui(run: Path, include_train: bool = False, graphics: str = "auto", audit: bool = False, data=None,
            labels=None) -> None:
    run = Path(run)
    load_config(run)
    entries = load_audit_entries(run) if audit else load_entries(run, include_train, data, labels)
    missing = [e for e in entries if not Path(e.path).exists() or (e.other and not Path(e.other).exists())]
    entries = [e for e in entries if Path(e.path).exists() and (not e.other or Path(e.other).exists())]
    if not entries:
        raise NothingToDo(f"nothing to review in {run} ({len(missing)} listed files no longer exist)")
    app = make_app(run, entries, graphics=graphics)
    app.run()
    if missing:
        print(f"skipped {len(missing)} file(s) listed in {'audit' if audit else 'top_losses'}.csv that no longer exist")
    d = Decisions(run / DECISIONS)
    print(f"{len(d.latest)} decision(s) in {run / DECISIONS}; apply them with: python -m app review {run} --apply")


def _image_widget(graphics: str):
    import textual_image.widget as tw

    return {"kitty": tw.TGPImage, "sixel": tw.SixelImage, "halfcell": tw.HalfcellImage,
            "unicode": tw.UnicodeImage}.get(graphics, tw.Image)


def make_app(run: Path, entries: list[Entry], graphics: str = "auto") -> ReviewApp:
    """The Textual app over `entries` (tests drive it with Textual's pilot); a multi-label run's edits
    label sets (MultiLabelReviewApp)."""
    _, meta = load_config(run)
    if meta.get("layout", {}).get("label_delim"):
        return MultiLabelReviewApp(run, entries, meta.get("classes", []), _image_widget(graphics))
    return ReviewApp(run, entries, meta.get("classes", []), _image_widget(graphics), Cams(run, meta))


class Cams:
    """Grad-CAM overlays for the review screen: the audit's own files where it made them, else computed
    with the model of the run (an audit folder: the audited run's, or its first fold's) on first use."""

    def __init__(self, run: Path, meta: dict):
        folds = Path(run) / "folds" / "fold-1"
        self.model_run = Path(meta.get("source_run") or (folds if meta.get("kind") == "audit" else run))
        self.model, self.made, self.error = None, {}, ""

    def overlay(self, e: Entry):
        """The entry's overlay (a PIL image), for the class the entry is about; None when there is none."""
        from PIL import Image

        from ..data.images import BadImage, open_rgb

        if e.cam and Path(e.cam).is_file():
            try:
                return open_rgb(e.cam)
            except BadImage:
                pass
        if e.path not in self.made:
            self.made[e.path] = self._compute(e)
        a = self.made[e.path]
        return None if a is None else Image.fromarray(a)

    def _compute(self, e: Entry):
        from ..core.errors import AppError
        from ..model.cam import CamModel

        try:
            self.model = self.model or CamModel.from_run(self.model_run)
            shown = e.predicted if e.kind in ("top_loss", "label_issue") else e.actual
            target = [self.model.classes.index(shown)] if shown in self.model.classes else None
            return self.model.overlays([self.model.load(e.path)], target)[0][0]
        except (AppError, OSError) as err:
            self.error = getattr(err, "message", str(err))
            return None


def side_by_side(a, b, height: int = 256):
    """Two images next to each other at one height, a gap between (a leakage pair on one screen)."""
    from PIL import Image

    a, b = (im.resize((max(1, im.width * height // im.height), height)) for im in (a, b))
    out = Image.new("RGB", (a.width + b.width + 16, height), "white")
    out.paste(a, (0, 0))
    out.paste(b, (a.width + 16, 0))
    return out


class ReviewApp(App):
    """Keys keep, relabel, remove, go back, skip, quit; each decision appended to decisions.csv at once."""

    CSS = """
    #body { height: 1fr; }
    #picture { width: 1fr; height: 100%; content-align: center middle; }
    #info { width: 46; padding: 0 1; border-left: solid $accent; }
    #classes { display: none; height: auto; max-height: 14; }
    #classes.open { display: block; }
    """
    BINDINGS = [
        Binding("k", "keep", "keep"), Binding("r", "relabel", "relabel"),
        Binding("x", "remove", "remove"), Binding("delete", "remove", "remove", show=False),
        Binding("b", "back", "back"), Binding("left", "back", "back", show=False),
        Binding("n", "next", "skip"), Binding("right", "next", "skip", show=False),
        Binding("c", "cam", "Grad-CAM"), Binding("q", "quit", "quit"),
        Binding("escape", "cancel", "cancel", show=False),
    ]

    def __init__(self, run: Path, entries: list[Entry], classes: list[str], image_widget, cams: Cams | None = None):
        super().__init__()
        self.title = f"review {run.name}"
        self.entries, self.vocab, self.image_widget = entries, classes, image_widget
        self.cams, self.cam_on = cams, False
        self.decisions = Decisions(run / DECISIONS)
        undecided = [i for i, e in enumerate(entries) if self.decisions.get(e.path) is None]
        self.pos = undecided[0] if undecided else 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield self.image_widget(id="picture")
            with Vertical(id="info"):
                yield Static(id="details")
                yield OptionList(*[f"{i}  {c}" for i, c in enumerate(self.vocab)], id="classes", markup=False)
        yield Footer()

    def on_mount(self):
        self.show()

    @property
    def entry(self) -> Entry:
        return self.entries[self.pos]

    def show(self):
        self.query_one("#picture").image = self.picture()
        self.query_one("#details", Static).update(self.details())

    def picture(self):
        """The entry's image (its Grad-CAM overlay when toggled on), its pair's image beside it."""
        from ..data.images import BadImage, open_rgb

        e = self.entry
        try:
            first = (self.cams.overlay(e) if self.cam_on and self.cams else None) or open_rgb(e.path, min_size=256)
            return side_by_side(first, open_rgb(e.other, min_size=256)) if e.other else first
        except BadImage:
            return None

    def action_cam(self):
        self.cam_on = not self.cam_on
        self.show()

    def details(self):
        """The side panel: class names and paths shown as typed (built as styled text, not markup)."""
        from textual.content import Content

        e, d = self.entry, self.decisions.get(self.entry.path)
        state = "undecided" if d is None else d["decision"] + (f" -> {d['new_class']}" if d["new_class"] else "")
        done = sum(1 for x in self.entries if self.decisions.get(x.path))
        cam = "on" if self.cam_on else "off"
        if self.cam_on and self.cams and self.cams.error:
            cam = f"unavailable ({self.cams.error})"
        return Content.assemble(
            (f"{self.pos + 1} / {len(self.entries)}", "bold"), f"  ({done} decided)\n\n",
            (KIND_WORDS.get(e.kind, ""), "bold"), (e.split, "dim"), f" {Path(e.path).name}\n",
            (str(Path(e.path).parent), "dim"), *self.facts(e), "\n\ndecision:   ", (state, "bold"),
            (f"\nGrad-CAM:   {cam}", "dim"),
            ("\n\nk keep · r relabel · x remove · b back · n skip · c Grad-CAM · q quit", "dim"))

    def facts(self, e: Entry) -> list:
        """What the entry says, by kind: a top loss, a label issue, or a pair (its first image on the left)."""
        if e.kind == "label_issue":
            return ["\n\ngiven:      ", (e.actual, "bold"), "\nsuggested:  ", (e.predicted, "bold"),
                    f" (p {e.probability:.3f})\nlabel quality {e.loss:.4f} (cleanlab; lower is worse)"]
        if e.kind in ("leakage", "near_duplicate"):
            where = "in training" if e.kind == "leakage" else "in the same split"
            return ["\n\nleft: this image, label ", (e.actual, "bold"), f"\nright: its near copy {where}:\n  ",
                    Path(e.other).name, f"\ncosine similarity {e.loss:.4f}\n", (e.predicted, "dim"),
                    "\nx removes the left image (quarantine)"]
        top = "\n".join(f"  {c} {p:.3f}" for c, p in parse_top3(e.top3))
        return ["\n\nactual:     ", (e.actual, "bold"), "\npredicted:  ", (e.predicted, "bold"),
                f"\nprobability {e.probability:.3f}\nloss        {e.loss:.3f}\n\ntop 3:\n{top}"]

    def advance(self):
        if self.pos < len(self.entries) - 1:
            self.pos += 1
        self.show()

    def decide(self, kind, new_class=""):
        self.decisions.record(self.entry, kind, new_class)
        self.advance()

    def action_keep(self):
        self.decide("keep")

    def action_remove(self):
        self.decide("remove")

    def action_relabel(self):
        ol = self.query_one("#classes", OptionList)
        ol.add_class("open")
        ol.focus()

    def action_cancel(self):
        self.query_one("#classes", OptionList).remove_class("open")

    def on_option_list_option_selected(self, event):
        self.action_cancel()
        new = self.vocab[event.option_index]
        self.decide("keep") if new == self.entry.actual else self.decide("relabel", new)

    def action_back(self):
        if self.pos > 0:
            self.pos -= 1
        self.show()

    def action_next(self):
        self.advance()


# A multi-label run: the given and predicted label sets, the labels missed and the ones wrong, and a
# relabel that edits the set (a checkbox list, the given labels ticked: space toggles, r again saves);
# decisions.csv's new_class holds the new set, `;` between labels, which --apply writes into the CSV.
SEP = ";"  # between the labels of a set, in top_losses.csv and decisions.csv


def label_set(cell: str) -> list[str]:
    return [c for c in (cell or "").split(SEP) if c]


class MultiLabelReviewApp(ReviewApp):
    """ReviewApp over label sets: `r` opens the label checklist (space ticks), `r` again saves the set."""

    CSS = ReviewApp.CSS.replace("#classes", "#labels")

    def compose(self):
        yield Header()
        with Horizontal(id="body"):
            yield self.image_widget(id="picture")
            with Vertical(id="info"):
                yield Static(id="details")
                yield SelectionList(*[(c, c) for c in self.vocab], id="labels")
        yield Footer()

    def details(self):
        from textual.content import Content

        e, d = self.entry, self.decisions.get(self.entry.path)
        state = "undecided" if d is None else d["decision"] + (f" -> {d['new_class'] or '(none)'}"
                                                              if d["decision"] == "relabel" else "")
        top = "\n".join(f"  {c} {p:.3f}" for c, p in parse_top3(e.top3))
        done = sum(1 for x in self.entries if self.decisions.get(x.path))
        given, said = label_set(e.actual), label_set(e.predicted)
        return Content.assemble(
            (f"{self.pos + 1} / {len(self.entries)}", "bold"), f"  ({done} decided)\n\n", (e.split, "dim"),
            f" {Path(e.path).name}\n", (str(Path(e.path).parent), "dim"),
            "\n\ngiven:      ", ("; ".join(given) or "(none)", "bold"),
            "\npredicted:  ", ("; ".join(said) or "(none)", "bold"),
            "\nmissed:     ", "; ".join(c for c in given if c not in said) or "-",
            "\nwrong:      ", "; ".join(c for c in said if c not in given) or "-",
            f"\nloss        {e.loss:.3f}\n\ntop 3:\n{top}\n\ndecision:   ", (state, "bold"),
            ("\n\nk keep · r relabel (space ticks, r saves) · x remove · b back · n skip · q quit", "dim"))

    def action_relabel(self):
        sl = self.query_one("#labels", SelectionList)
        if sl.has_class("open"):
            return self.action_save_set()
        sl.deselect_all()
        for c in label_set(self.entry.actual):
            if c in self.vocab:
                sl.select(c)
        sl.add_class("open")
        sl.focus()

    def action_cancel(self):
        self.query_one("#labels", SelectionList).remove_class("open")

    def on_option_list_option_selected(self, event):
        event.stop()  # a tick in the checklist (SelectionList is an OptionList): not a decision

    def action_save_set(self):
        sl = self.query_one("#labels", SelectionList)
        if not sl.has_class("open"):
            return
        self.action_cancel()
        new = [c for c in self.vocab if c in set(sl.selected)]  # in vocab order
        if set(new) == set(label_set(self.entry.actual)):
            self.decide("keep")
        else:
            self.decide("relabel", SEP.join(new))
