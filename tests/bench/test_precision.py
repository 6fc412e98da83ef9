"""The fp32-vs-bf16 benches on real images at a tiny size: every promised number, the warm-up
round reported but not counted, the ratios the rule reads, and the accuracy pairs by seed."""

import json

import pytest

from app.bench.precision import LOADER_TARGET, POINTS_ALLOWED, SPEEDUP_NEEDED, _accuracy_summary, _speed_summary

from ..conftest import assert_one_line_error, need_shared, run_cli


def test_bf16_speed_bench_interleaves_rounds_and_drops_the_warm_up(tmp_path):
    need_shared()
    out = tmp_path / "bf16.json"
    p = run_cli("bench", "--bf16", "--images", 24, "--size", 64, "--bs", 8, "--repeats", 2, "--json", out,
                check=True, timeout=900)
    res = json.loads(out.read_text())
    assert res["rounds"] == 2 and res["cpu_bf16"]["mkldnn_bf16"] in (True, False)
    for prec in ("fp32", "bf16"):
        for k in ("model_img_s", "e2e_img_s", "loader_share"):
            rounds = res["per_round"][prec][k]
            assert len(rounds) == 3 and all(v > 0 for v in rounds)
            assert res[f"{prec}_{k}_range"] == [min(rounds[1:]), max(rounds[1:])]  # round 0 left out
    assert res["e2e_ratio"] == pytest.approx(res["bf16_e2e_img_s_median"] / res["fp32_e2e_img_s_median"], abs=1e-3)
    assert res["e2e_meets_rule"] == (res["e2e_ratio"] >= SPEEDUP_NEEDED)
    assert "round 0 (warm-up, not counted)" in p.stdout
    # the main job's recipe is what is timed: cpu-quick has no lighting transform, fastai's defaults have one
    assert res["recipe"] == "cpu-quick" and res["recipe_settings"]["max_lighting"] == 0.0
    ms = res["loader_ms_per_batch"]
    assert {"gather", "IntToFloatTensor", "TrainOnlyAffine", "NormalizeInPlace"} <= set(ms["recipe"]) and "Brightness" not in ms["recipe"]
    assert "Brightness" in ms["fastai_default_augmentation"] and "ResizeBatch" not in ms["recipe"]  # validation only
    for prec in ("fp32", "bf16"):  # the loader's seconds inside each fit: a share, and only part of it
        assert all(0 < v < 1 for v in res["per_round"][prec]["loader_share"])
    assert all(v >= 0 for v in ms["recipe"].values())
    assert ms["recipe"]["total"] == pytest.approx(sum(v for k, v in ms["recipe"].items() if k != "total"), abs=0.05)
    assert len(res["bf16_e2e_over_model_per_round"]) == 2
    # fewer images than two batches: nothing would be timed end to end (it was a division by zero)
    short = run_cli("bench", "--bf16", "--images", 16, "--size", 64, "--bs", 8, "--json", tmp_path / "short.json")
    assert_one_line_error(short, 2, "--images 16 gives 10 training images", "at least 2 batches")
    assert not (tmp_path / "short.json").exists()


def test_the_speed_summary_uses_medians_of_the_counted_rounds():
    rounds = {"fp32": {"model_img_s": [10.0, 100.0, 110.0, 90.0], "e2e_img_s": [5.0, 80.0, 70.0, 90.0]},
              "bf16": {"model_img_s": [1.0, 170.0, 160.0, 180.0], "e2e_img_s": [2.0, 100.0, 110.0, 90.0]}}
    s = _speed_summary(rounds)
    assert s["rounds"] == 3 and s["fp32_model_img_s_median"] == 100.0 and s["bf16_model_img_s_median"] == 170.0
    assert s["model_ratio"] == 1.7 and s["e2e_ratio"] == 1.25 and s["e2e_meets_rule"]


def test_the_loader_verdict_reads_each_rounds_own_ratio_not_the_ratio_of_medians():
    # round 2's model reading came in a slow minute: best-of or median-of-each would pair numbers from
    # different minutes (100 model, 60 end to end: 0.6); within each round the loader kept 0.9, 0.9, 0.6
    rounds = {p: {"model_img_s": [10.0, 100.0, 50.0, 100.0], "e2e_img_s": [5.0, 90.0, 45.0, 60.0]} for p in ("fp32", "bf16")}
    s = _speed_summary(rounds)
    assert s["bf16_e2e_over_model_per_round"] == [0.9, 0.9, 0.6]
    assert s["bf16_e2e_over_model"] == 0.9 and s["bf16_e2e_over_model_of_medians"] == 0.6
    assert s["bf16_loader_keeps_up"] == (0.9 >= LOADER_TARGET)


def test_the_accuracy_summary_pairs_runs_by_seed():
    runs = [{"seed": 1, "precision": "fp32", "accuracy": 0.800, "fit_s": 10.0},
            {"seed": 1, "precision": "bf16", "accuracy": 0.806, "fit_s": 6.0},
            {"seed": 2, "precision": "fp32", "accuracy": 0.790, "fit_s": 10.0},
            {"seed": 2, "precision": "bf16", "accuracy": 0.780, "fit_s": 6.0}]
    s = _accuracy_summary(runs)
    assert s["diff_points"] == [0.6, -1.0] and s["mean_diff_points"] == -0.2
    assert s["within_rule"] == (0.2 <= POINTS_ALLOWED) and s["fp32_mean_accuracy"] == 0.795


def test_bf16_accuracy_bench_trains_both_precisions_per_seed(small_data):
    from app.bench.precision import run_bf16_accuracy
    from app.core.errors import UsageError

    said = []
    res = run_bf16_accuracy(small_data, size=64, images=80, epochs=1, seeds=1, log=said.append)
    assert [(r["seed"], r["precision"]) for r in res["runs"]] == [(1, "fp32"), (1, "bf16")]
    assert res["train_images"] == 80 and res["val_images"] == 60 and all(r["n_val"] == 60 for r in res["runs"])
    assert all(0 <= r["accuracy"] <= 1 for r in res["runs"]) and len(res["diff_points"]) == 1
    assert any("seed 1 bf16" in m for m in said)
    with pytest.raises(UsageError, match="not one batch of 64"):  # a subset that trains nothing is refused
        run_bf16_accuracy(small_data, size=64, images=32, epochs=1, seeds=1, log=said.append)
