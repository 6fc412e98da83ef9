"""bench's one table of modes (app/bench/main.py MODES): each row's flag is an option of `run` and
of the CLI's bench, and the arguments it builds bind to its function's own signature."""

import inspect
from importlib import import_module
from types import SimpleNamespace

from app.bench.main import MODES, run


def _options() -> SimpleNamespace:
    params = inspect.signature(run).parameters
    return SimpleNamespace(**{k: (p.default if p.default is not inspect.Parameter.empty else None)
                              for k, p in params.items()})


def test_every_mode_binds_to_its_function_and_is_a_flag_of_run_and_the_cli():
    from app.cli import bench

    cli_params = set(inspect.signature(bench).parameters)
    flags = [flag for flag, _, _ in MODES]
    assert flags[-1] is None and None not in flags[:-1], "the speed bench is the one default, last"
    for flag, target, args in MODES:
        module, func = target.rsplit(".", 1)
        fn = getattr(import_module(f"app.bench.{module}"), func)
        inspect.signature(fn).bind(log=print, **args(_options()))  # raises on a name the function lacks
        if flag:
            assert flag in inspect.signature(run).parameters and flag in cli_params, flag


def test_the_first_flag_set_chooses_the_bench(monkeypatch):
    seen = []
    import app.bench.startup as startup

    monkeypatch.setattr(startup, "run_scan", lambda data=None, log=print: seen.append(("scan", data)) or {"ok": 1})
    assert run(scan=True, data="D") == {"ok": 1} and seen == [("scan", "D")]
