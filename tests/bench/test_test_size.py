"""bench --test-sizes: one run's model scored at its training size and each test size up to 1.25x it."""

import json


def test_the_test_size_bench_scores_one_model_at_each_size_as_training_scored_it(fitted, tmp_path, capsys):
    """The run (cpu-quick at 64 px, whose test size stays 64: 80 is no size AlexNet's pools cover) was
    evaluated by training itself: the bench, another path (the run loaded back, fastai's validate
    at each size), gives that same accuracy at 64, and at 72 and 80 the same images seen larger."""
    from app.cli import main

    run, _ = fitted
    out = tmp_path / "test-sizes.json"
    assert main(["bench", "--test-sizes", str(run), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert (res["train_size"], res["run_test_size"], list(res["sizes"])) == (64, 64, ["64", "72", "80"])
    assert metrics["size"] == 64 and "train_size" not in metrics
    assert [r["pools_cover"] for r in res["sizes"].values()] == [True, False, False]
    assert res["n"] == metrics["n"] == 60
    assert abs(res["sizes"]["64"]["accuracy"] - metrics["accuracy"]) < 1e-4
    assert all(0 <= r["accuracy"] <= 1 and r["valid_loss"] > 0 and r["img_s"] > 0 for r in res["sizes"].values())
    best = max(res["sizes"], key=lambda s: res["sizes"][s]["accuracy"])
    assert res["best_size"] == int(best)
    assert abs(res["best_minus_train_size_points"] - 100 * (res["sizes"][best]["accuracy"] - res["sizes"]["64"]["accuracy"])) < 0.01
    shown = capsys.readouterr().out
    assert "64 px: accuracy" in shown and "not a held-out score" in shown


def test_the_test_size_bench_of_a_missing_run_is_one_line(tmp_path):
    from ..conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("bench", "--test-sizes", tmp_path / "norun"), 5, "not found")
