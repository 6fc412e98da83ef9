"""The end of a training run, in one place: files that went bad during training added to the
skip list, then evaluation with every figure, the report and the export the command asked for,
and the whole command's wall time in config.json."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.host import process_seconds
from ..core.rundir import update_config
from ..data.skipped import print_skipped, write_skipped


def finish_run(learn, s, finish) -> None:
    """Evaluate, report and export a trained Learner with what training already has (settings,
    scanned dataset): nothing is read back or scanned again."""
    from ..data.loaders import take_skipped_at_load

    if finish.evaluate:
        from ..evaluation.evaluate import evaluate_learner

        evaluate_learner(learn, s.run, s.cfg, tta=finish.tta, log=s.log, ds=s.ds, figures=finish.figures,
                         keep_probs=finish.probs)
    late = take_skipped_at_load(learn.dls)  # every process's, training and evaluation
    if late:
        s.ds.skipped.extend(late)
        write_skipped(s.ds.skipped, s.run / "skipped.csv")
        s.log(f"{len(late)} file(s) could not be read during training (changed after the scan)")
    if finish.evaluate and finish.figures:
        from ..evaluation.report import write_report

        s.log(f"report: {write_report(s.run)}")
    if finish.export:
        from ..shipping.export import export_learner

        export_learner(learn, s.run, None, ds=s.ds, log=s.log)
    wall = process_seconds()
    update_config(s.run, wall_seconds=round(wall, 1))
    if s.plan is not None:
        kept = f", {s.cfg.epochs} epochs as re-planned (first plan {s.plan.epochs})" if s.budget is not None else ""
        s.log(f"time: took {wall / 60:.1f} min of the {s.plan.budget_s / 60:g} min budget "
              f"({100 * wall / s.plan.budget_s:.1f} %); planned {s.plan.predicted_s / 60:.1f} min before fitting{kept}")
    print_skipped(s.ds.skipped, s.log)


@dataclass
class Finish:
    """What happens once training ends : evaluation, figures and report; TTA; export."""

    evaluate: bool = True
    tta: bool = False
    export: bool = False
    figures: bool = True  # with the figures and the report (benches score many runs without them)
    probs: bool = False  # every validation image's probabilities in probs.npz (audit's folds read them)
