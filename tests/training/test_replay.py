"""`train --config`: a run replayed from its own config.json trains the same weights bit for bit on
a CPU (and `compare` says so); a YAML written by hand reads like the flags; flags typed beside the
file win; a bad file is one line (exit 2). All in this process."""

import json

import pytest
import torch

from app.cli import main
from app.training.presets import read_settings, with_settings_file

from ..conftest import assert_one_line_error


class _Captured:
    def __init__(self, rc, capsys):
        out = capsys.readouterr()
        self.returncode, self.stdout, self.stderr = rc, out.out, out.err


def test_a_replay_from_config_json_trains_the_same_weights_and_compare_says_so(tracked, tmp_path, capsys):
    """The tracked run (made from a YAML recipe, logged to three trackers) replayed from its config.json
    without trackers: every tensor of the last checkpoint equal, the same settings, the same metrics."""
    rep = tmp_path / "replay"
    assert main(["train", "--config", str(tracked / "config.json"), "--track", "none", "--out", str(rep)]) == 0
    first, again = (json.loads((r / "config.json").read_text()) for r in (tracked, rep))
    assert again["config"] == first["config"] and not again.get("track") and "trackers" not in again
    a, b = (torch.load(r / "models" / "last.pth", weights_only=True)["model"] for r in (tracked, rep))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again["weights_sha256"] == first["weights_sha256"]
    capsys.readouterr()
    assert main(["compare", str(tracked), str(rep), "--json", str(tmp_path / "cmp.json")]) == 0
    said = capsys.readouterr().out
    rows = json.loads((tmp_path / "cmp.json").read_text())
    keep = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "weights_sha256", "epochs", "lr", "size")
    assert [{k: r[k] for k in keep} for r in rows][0] == [{k: r[k] for k in keep} for r in rows][1]
    assert f"same trained weights, bit for bit (sha256 {first['weights_sha256'][:12]})" in said


def test_a_yaml_recipe_reads_like_the_flags(tmp_path):
    f = tmp_path / "recipe.yaml"
    f.write_text("lr: 1e-3\nvalid-every: 2\nsize: '96'\nps: 0.3\nloader: fast\ntrack: [mlflow]\ntta: yes\n")
    got = read_settings(f)  # 1e-3 is a number here, as on the command line (YAML alone reads a string)
    assert got == {"lr": 0.001, "valid_every": 2, "size": 96, "head_dropout": 0.3, "loader": "cached",
                   "track": ["mlflow"], "tta": True}


def test_a_runs_config_json_replays_its_recipe_not_what_was_resolved_from_elsewhere(tracked, tmp_path):
    """Its lr stays and its lr-find source is not read again; a time budget plans again (the preset's
    epochs, not the ones the first run's budget planned); a typed --epochs replaces the file's --time."""
    meta = json.loads((tracked / "config.json").read_text())
    meta["config"].update(lr_from="/gone/lr-find-1", time=15.0, epochs=38)
    f = tmp_path / "config.json"
    f.write_text(json.dumps(meta))
    got = read_settings(f)
    assert "lr_from" not in got and "epochs" not in got and got["time"] == 15.0 and got["lr"] == meta["config"]["lr"]
    assert got["track"] == ["tensorboard", "mlflow", "wandb"] and got["size"] == 64
    typed = with_settings_file(f, {"epochs": 3, "seed": 5})
    assert typed["epochs"] == 3 and "time" not in typed and typed["seed"] == 5
    assert typed["recipe_command"] == "fit-one-cycle" and "command" not in typed


def test_flags_typed_beside_the_file_win_and_defaults_do_not(tracked, tmp_path, capsys):
    """--data typed beside the file is the one checked (here: missing, so nothing trains); an option left
    at its default (--seed 42) does not replace the file's seed."""
    rc = main(["train", "--config", str(tracked / "config.json"), "--data", str(tmp_path / "nowhere"),
               "--out", str(tmp_path / "run")])
    assert_one_line_error(_Captured(rc, capsys), 3, "nowhere")
    meta = json.loads((tracked / "config.json").read_text())
    meta["config"]["seed"] = 7
    (tmp_path / "c.json").write_text(json.dumps(meta))
    assert with_settings_file(tmp_path / "c.json", {})["seed"] == 7


@pytest.mark.parametrize("text,words", [
    ("lrr: 1e-3\n", ["lrr is not a setting", "did you mean lr"]),
    ("size: big\n", ["size is 'big'", "expected a whole number"]),
    ("compile: maybe\n", ["compile", "true or false"]),
    ("progressive: 64\n", ["progressive", "expected text"]),
    ("progressive: '64:2'\n", ["progressive fractions"]),
    ("- lr\n- 1e-3\n", ["key: value", "list"]),
    ("lr: [1e-3\n", ["not YAML or JSON", "line"]),
    ("command: lr-find\n", ["not a training command"]),
])
def test_a_bad_settings_file_is_one_line(tmp_path, capsys, text, words):
    f = tmp_path / "recipe.yaml"
    f.write_text(text)
    rc = main(["train", "--config", str(f), "--out", str(tmp_path / "run")])
    assert_one_line_error(_Captured(rc, capsys), 2, "--config", str(f), *words)
    assert not (tmp_path / "run").exists()


def test_a_missing_settings_file_is_one_line(tmp_path, capsys):
    rc = main(["train", "--config", str(tmp_path / "none.yaml")])
    assert_one_line_error(_Captured(rc, capsys), 2, "none.yaml")
