"""bench --serve: a real `serve` process under concurrent clients, its numbers checked against what
the server itself counted."""

import functools
import json

import psutil


def small_probe(monkeypatch):
    """The host probe as the bench runs it, at 64 px and bs 8 (the test checks the plumbing; the
    bench's own JSON holds the 128-px reading)."""
    from app.bench import keep

    monkeypatch.setattr(keep, "model_only_img_s", functools.partial(keep.model_only_img_s, size=64, bs=8))


def test_serve_bench_loads_a_real_server_and_counts_what_it_served(fitted, tmp_path, capsys, monkeypatch):
    from app.cli import main
    from app.shipping.export import export_run

    small_probe(monkeypatch)
    run, _ = fitted
    _, bundle = export_run(run, tmp_path / "m.pkl", log=lambda *_: None)
    out = tmp_path / "serve.json"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert main(["bench", "--serve", str(bundle), "--clients", "3", "--seconds", "3", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["errors"] == 0 and res["error_samples"] == [] and res["requests"] > 0
    assert res["server"]["requests"] == res["requests"] + 3  # the server saw every timed request and the 3 warm-ups
    assert res["server"]["busy_refusals"] == 0 and res["server_exit"] == 0  # stopped by SIGINT, cleanly
    assert 3 <= res["wall_s"] < 30 and res["requests_s"] > 0
    assert 0 < res["latency_p50_ms"] <= res["latency_p99_ms"]
    assert res["predict_img_s"] > 0 and res["host_model_only_img_s_128px"] > 0 and res["clients"] == 3
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before  # no server left running
    assert "requests/s" in capsys.readouterr().out
