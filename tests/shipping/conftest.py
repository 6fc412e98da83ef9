"""One export in every format, shared by the format, serve and bench tests (an export of the
session's trained run: nothing else is trained)."""

import pytest

from ..conftest import run_cli

ALL_FORMATS = "onnx,onnx-int8,openvino,coreml,pt2"


@pytest.fixture(scope="session")
def all_formats(fitted, tmp_path_factory):
    """`export RUN --format <every format>` as a user types it: (run, bundle, process)."""
    run, _ = fitted
    to = tmp_path_factory.mktemp("formats") / "every.pkl"
    p = run_cli("export", run, "--to", to, "--format", ALL_FORMATS, check=True)
    return run, to.with_suffix(""), p
