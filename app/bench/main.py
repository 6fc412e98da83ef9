"""`python -m app bench`: which bench the flags ask for (the speed bench by default), and its JSON.

MODES is the one list of benches: the flag that asks for one, its module and function, and how the
command's options become its arguments. A new bench is one row (and its option in cli.bench)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from types import SimpleNamespace

from ..core.files import write_json

# (flag, module.function, its arguments from the options `o`); the first flag set wins
MODES: tuple[tuple[str, str, Callable[[SimpleNamespace], dict]], ...] = (
    ("multi_label", "multilabel.run_multilabel", lambda o: dict(data=o.data, minutes=o.multi_label, device=o.device)),
    ("scan", "startup.run_scan", lambda o: dict(data=o.data)),
    ("precision_budget", "main_job.run_precision_budget",
     lambda o: dict(data=o.data, minutes=o.precision_budget, seeds=o.seeds)),
    ("export", "formats.run_export_bench", lambda o: dict(run=o.export, data=o.data, repeats=o.repeats)),
    ("test_sizes", "test_size.run_test_sizes", lambda o: dict(run=o.test_sizes)),
    ("serve", "serve.run_serve_bench", lambda o: dict(bundle=o.serve, clients=o.clients, seconds=o.seconds, data=o.data)),
    ("scale", "scale.run_scale", lambda o: dict(device=o.device)),
    ("transfer", "transfer.run_transfer",
     lambda o: dict(data=o.data, device=o.device, json_path=o.json_path, **(o.transfer_options or {}))),
    ("audit", "audit.run_audit_bench",
     lambda o: dict(data=o.data, device=o.device, json_path=o.json_path, **(o.audit_options or {}))),
    ("budget", "budget.run_budget", lambda o: dict(data=o.data, minutes=o.budget, device=o.device)),
    ("keep", "keep.run_keep", lambda o: dict(data=o.data, minutes=o.keep, device=o.device)),
    ("bf16", "precision.run_bf16_speed",
     lambda o: dict(data=o.data, size=o.size, bs=o.bs, images=o.images or 1280, repeats=o.repeats)),
    ("bf16_accuracy", "precision.run_bf16_accuracy",
     lambda o: dict(data=o.data, size=o.size, images=o.images or 2000, epochs=o.epochs or 12, seeds=o.seeds)),
    (None, "speed.run_speed", lambda o: dict(data=o.data, size=o.size, bs=o.bs, images=o.images or 1280,
                                             device_name=o.device, repeats=o.repeats, compile=o.compile)),
)


def run(data=None, size=128, bs=64, images=None, json_path=None, console=None, device="auto", repeats=3,
        scale=False, transfer=False, budget=None, compile=False, bf16=False, bf16_accuracy=False, keep=None,
        seeds=3, epochs=None, transfer_options: dict | None = None, scan=False, precision_budget=None,
        export=None, serve=None, clients=8, seconds=30.0, audit: bool = False,
        audit_options: dict | None = None, multi_label=None, test_sizes=None) -> dict:
    """The bench the flags ask for; its JSON written to `json_path`."""
    o = SimpleNamespace(**{k: v for k, v in locals().items() if k != "console"})
    log = console.print if console else print
    _, target, args = next(m for m in MODES if m[0] is None or getattr(o, m[0]))
    module, func = target.rsplit(".", 1)
    res = getattr(import_module(f".{module}", __package__), func)(log=log, **args(o))
    if json_path:
        write_json(json_path, res)
        log(f"wrote {json_path}")
    return res
