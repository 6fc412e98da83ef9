"""bench --json on a tiny subset: every promised key, each a positive number."""

import json

from ..conftest import assert_one_line_error, need_shared, run_cli

KEYS = ["ceiling_train_img_s", "fastai_train_img_s", "fast_train_img_s", "fast_vs_ceiling", "fast_vs_fastai",
        "fastai_loader_img_s", "fast_loader_img_s", "predict_folder_pickle_img_s", "predict_folder_bundle_img_s",
        "predict_loop_img_s", "predict_folder_vs_loop", "cold_predict_bundle_s", "cold_predict_pickle_s",
        "cold_pickle_vs_bundle", "peak_rss_mb", "cache_build_s"]


def test_bench_json_has_every_measure(tmp_path):
    need_shared()
    out = tmp_path / "bench.json"
    p = run_cli("bench", "--images", 64, "--size", 64, "--bs", 16, "--repeats", 1, "--json", out, check=True)
    res = json.loads(out.read_text())
    for k in KEYS:
        assert isinstance(res[k], (int, float)) and res[k] > 0, (k, res.get(k))
    assert res["size"] == 64 and res["bs"] == 16 and 0 < res["train_images"] <= 64
    assert res["versions"]["fastai"] and res["device"]
    # what the numbers mean, not how they are computed: the model alone bounds end-to-end training
    # (noise allowed: a host shared with other work read 2.3x once, when the ceiling's rounds fell in a
    # busy moment; speed itself is the benchmarks' JSON, never a unit test) and the cached loader alone
    # outruns the stock DataBlock (by 2.5x in benchmarks/cpu-128.json). The steady-state rate against the
    # whole epoch's is left to the JSON: both are timings, and on a shared host one read 169.4 vs 169.1.
    assert res["fast_vs_ceiling"] < 3 and res["fastai_vs_ceiling"] < 3
    assert res["fast_loader_img_s"] > res["fastai_loader_img_s"]
    assert 0 < res["fast_epoch_img_s"] and 0 < res["fast_train_img_s"]
    assert "model-only ceiling" in p.stdout
    assert res["rounds"] == 1 and all(len(v) == 1 for v in res["per_round_train_img_s"].values())
    assert len(res["fast_vs_ceiling_per_round"]) == 1 and "round by round" in p.stdout
    short = run_cli("bench", "--images", 16, "--size", 64, "--bs", 8, "--json", tmp_path / "short.json")
    assert_one_line_error(short, 2, "--images 16 gives 10 training images", "at least 2 batches")  # was a division by 0


def test_the_loader_ratio_pairs_each_round_and_a_slow_minute_does_not_set_it():
    """Best over best mixes minutes: a ceiling round in a quiet minute against end-to-end rounds in busy
    ones reads 0.6; paired round by round, the median is the 0.9 of the two undisturbed rounds."""
    from app.bench.precision import LOADER_TARGET
    from app.bench.speed import paired_ratios

    r = paired_ratios({"ceiling": [100.0, 150.0, 100.0], "fast": [90.0, 60.0, 90.0]})
    assert r["fast_vs_ceiling_per_round"] == [0.9, 0.4, 0.9] and r["fast_vs_ceiling_median"] == 0.9
    assert r["loader_keeps_up"] is (0.9 >= LOADER_TARGET)
    assert paired_ratios({"ceiling": [100.0, 100.0, 100.0], "fast": [80.0, 84.0, 99.0]})["loader_keeps_up"] is False


def test_scale_bench_generates_learnable_datasets_and_measures_memory(tmp_path):
    from app.bench.scale import run_scale

    res = run_scale(sizes=(300,), batches=3, bs=16, log=lambda *_: None)
    r = res["runs"][0]
    assert r["images"] == 300 and res["images_growth"] == 1
    for k in ("peak_rss_mb", "train_img_s", "loader_img_s", "prep_s"):
        assert r[k] > 0, k
