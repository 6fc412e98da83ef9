"""compare: one table of runs; --json never overwrites a file and is written whole."""

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
