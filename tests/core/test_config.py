"""A run's config.json is checked as it is read back (--resume, evaluate, export, review): a value of
the wrong type is one line naming the file and the setting, never a crash later."""

import json

import pytest

from ..conftest import assert_one_line_error, run_cli


@pytest.mark.parametrize("key,value,words", [("size", "64", "expected a whole number"),
                                             ("progressive", "abc", "SIZE:FRACTION"),
                                             ("lr", [1e-3], "expected a number"),
                                             ("compile", "yes", "true or false")])
def test_a_config_of_the_wrong_types_is_one_line(tiny_data, tmp_path, key, value, words):
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    cfg = {"command": "fit-one-cycle", "data": str(tiny_data), "epochs": 2, "size": 64, key: value}
    (run / "config.json").write_text(json.dumps({"config": cfg, "classes": ["a", "b"], "status": "interrupted"}))
    for args in (["fit-one-cycle", "--resume", run], ["evaluate", run], ["export", run]):
        assert_one_line_error(run_cli(*args), 5, "config.json", key, words)


def test_a_config_that_is_not_an_object_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2]")
    assert_one_line_error(run_cli("fit-one-cycle", "--resume", run), 5, "config.json")
