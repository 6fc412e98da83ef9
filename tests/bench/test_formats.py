"""bench --export: every format that runs here, checked and timed beside torch eager, in one JSON."""

import json

from app.bench import formats as bench_formats

from .test_serve import small_probe


def test_export_bench_times_every_format_that_runs_here(fitted, tmp_path, monkeypatch, capsys):
    from app.cli import main
    from app.shipping.formats import FORMATS

    small_probe(monkeypatch)
    monkeypatch.setattr(bench_formats, "LATENCY_CALLS", 20)  # the timings are the bench's; here, the plumbing
    monkeypatch.setattr(bench_formats, "THROUGHPUT_BATCHES", 1)
    run, _ = fitted
    out = tmp_path / "export-cpu.json"
    assert main(["bench", "--export", str(run), "--repeats", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    runnable = [f.name for f in FORMATS if f.load is not None]
    assert runnable == ["onnx", "onnx-int8", "openvino", "pt2"]  # Core ML cannot run off Apple systems
    assert list(res["formats"]) == ["torch-eager", *runnable]
    for name, r in res["formats"].items():
        assert 0 < r["latency_b1_p50_ms"] <= r["latency_b1_p99_ms"], name
        assert r["throughput_b32_img_s"] > 0 and r["load_s"] > 0 and r["latency_calls"] == 20, name
        assert r["throughput_images"] == 32 and len(r["per_round"]) == 2
        assert abs(r["throughput_b32_img_s"] - max(x["throughput_b32_img_s"] for x in r["per_round"])) < 0.01
    assert set(res["checks"]) == set(runnable)  # each timed file passed its export check first
    assert all(res["checks"][n]["max_abs_dprob"] <= 1e-3 for n in ("onnx", "openvino", "pt2"))
    assert res["checks"]["onnx-int8"]["images"] == 60
    assert res["host_model_only_img_s_128px"] > 0 and res["host_model_only_img_s_128px_after"] > 0 and res["size"] == 64 and res["run"] == str(run.resolve())
    shown = capsys.readouterr().out
    assert all(n in shown for n in res["formats"]) and "host model-only" in shown
