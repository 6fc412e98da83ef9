"""`python -m app bench`: which bench the flags ask for (the speed bench by default), and its JSON."""

from __future__ import annotations

from ..core.files import write_json
from .speed import run_speed


def run(data=None, size=128, bs=64, images=None, json_path=None, console=None, device="auto", repeats=3,
        scale=False, transfer=False, budget=None, compile=False, bf16=False, bf16_accuracy=False, keep=None,
        seeds=3, epochs=None, transfer_options: dict | None = None, scan=False, precision_budget=None,
        export=None, serve=None, clients=8, seconds=30.0, audit: bool = False,
        audit_options: dict | None = None, multi_label=None) -> dict:
    """The bench the flags ask for; its JSON written to `json_path`."""
    log = console.print if console else print
    if multi_label:
        from .multilabel import run_multilabel

        res = run_multilabel(data, multi_label, log=log, device=device)
    elif scan:
        from .startup import run_scan

        res = run_scan(data, log=log)
    elif precision_budget:
        from .main_job import run_precision_budget

        res = run_precision_budget(data, precision_budget, seeds, log=log)
    elif export:
        from .formats import run_export_bench

        res = run_export_bench(export, log=log, data=data, repeats=repeats)
    elif serve:
        from .serve import run_serve_bench

        res = run_serve_bench(serve, clients=clients, seconds=seconds, data=data, log=log)
    elif scale:
        from .scale import run_scale

        res = run_scale(log=log, device=device)
    elif transfer:
        from .transfer import run_transfer

        res = run_transfer(data, log=log, device=device, json_path=json_path, **(transfer_options or {}))
    elif audit:
        from .audit import run_audit_bench

        res = run_audit_bench(data, log=log, device=device, json_path=json_path, **(audit_options or {}))
    elif budget:
        from .budget import run_budget

        res = run_budget(data, budget, log=log, device=device)
    elif keep:
        from .keep import run_keep

        res = run_keep(data, keep, log=log, device=device)
    elif bf16:
        from .precision import run_bf16_speed

        res = run_bf16_speed(data, size, bs, images or 1280, log, repeats)
    elif bf16_accuracy:
        from .precision import run_bf16_accuracy

        res = run_bf16_accuracy(data, size, images or 2000, epochs or 12, seeds, log)
    else:
        res = run_speed(data, size, bs, images or 1280, log, device, repeats, compile)
    if json_path:
        write_json(json_path, res)
        log(f"wrote {json_path}")
    return res
