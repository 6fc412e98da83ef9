"""compare: one table of runs; --json never overwrites a file and is written whole; long paths
leave the table readable."""

import json

from ..conftest import assert_one_line_error, run_cli


def test_compare_json_never_overwrites(fitted, tmp_path):
    run, _ = fitted
    keep = tmp_path / "mine.json"
    keep.write_text("precious")
    p = run_cli("compare", run, "--json", keep)
    assert_one_line_error(p, 5, "already exists", str(keep))
    assert keep.read_text() == "precious" and "accuracy" not in p.stdout  # refused before the work
    new = tmp_path / "rows.json"
    run_cli("compare", run, run, "--json", new, check=True)
    rows = json.loads(new.read_text())
    assert len(rows) == 2 and rows[0]["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]


def test_markup_in_a_run_path_is_printed_as_typed(fitted, tmp_path):
    """A run folder named `[/x]` (a closing tag to rich) and `[bold]b`: compare prints both names as
    typed, where they were once parsed as markup (`[/x]` raised MarkupError, exit 1)."""
    import shutil

    run, _ = fitted
    odd = tmp_path / "[" / "x]" / "[bold]b"
    shutil.copytree(run, odd, ignore=shutil.ignore_patterns("*.pth", "export"))
    p = run_cli("compare", odd, env={"COLUMNS": "400"}, check=True)
    assert "[/x]/[bold]b" in p.stdout, p.stdout


def test_runs_in_long_paths_keep_every_column_readable_in_160_columns(fitted, tmp_path):
    """Two runs deep in long folders, as piped output prints them (160 columns): each run shown by the
    fewest trailing folders that tell it from the other, every header whole, the full paths below.
    Under pytest-xdist's longer temp paths the table had squeezed every column to 4 characters."""
    import shutil

    run, _ = fitted
    deep = tmp_path.joinpath(*[f"a-rather-long-folder-name-{i}" for i in range(6)])
    a, b = deep / "exp-a" / "run", deep / "exp-b" / "run"
    for d in (a, b):  # with a TTA accuracy, its column shown: the widest table (it had hidden the run column)
        shutil.copytree(run, d, ignore=shutil.ignore_patterns("*.pth", "export"))
        m = json.loads((d / "metrics.json").read_text())
        (d / "metrics.json").write_text(json.dumps({**m, "tta": {**m.get("tta", {}), "accuracy": 0.6125}}))
    p = run_cli("compare", a, b, env={"COLUMNS": "160"}, check=True)
    lines = p.stdout.splitlines()
    table = lines[: next(i for i, ln in enumerate(lines) if ln.startswith("exp-a/run: "))]
    assert max(map(len, table)) <= 160, p.stdout
    header = next(ln for ln in lines if "accuracy" in ln).split()
    assert header[:3] == ["run", "command", "preset"] and {"precision", "recall", "F1", "TTA", "sha256"} <= set(header), p.stdout
    rows = [ln.split() for ln in table if ln.strip().startswith("exp-")]
    assert [r[0] for r in rows] == ["exp-a/run", "exp-b/run"] and all(r[1] == "fit-one-cycle" for r in rows)
    assert f"exp-a/run: {a}" in p.stdout and f"exp-b/run: {b}" in p.stdout
