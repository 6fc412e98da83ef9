"""`python -m app ARGS` under torchrun, with two probes for tests/test_distributed.py: which items
each rank's training loader was given (PROBE.shards.rankN, one line per epoch) and the shape of
every training batch it yielded (PROBE.shapes.rankN). Test-only: the app itself logs neither."""

import os
import runpy
import sys

from app.core import ranks
from app.training import distributed

PROBE = os.environ["APP_DDP_PROBE"]
RANK = ranks.rank()
_get_idxs, _iter = distributed.GlooSafeDistributedDL.get_idxs, distributed.GlooSafeDistributedDL.__iter__


def _write(kind: str, line: str) -> None:
    with open(f"{PROBE}.{kind}.rank{RANK}", "a") as f:
        f.write(line + "\n")


def get_idxs(self):
    idxs = _get_idxs(self)
    if self.dl.shuffle:  # the training loader
        _write("shards", ",".join(map(str, idxs)))
    return idxs


def iterate(self):
    for b in _iter(self):
        if self.dl.shuffle:
            _write("shapes", "x".join(map(str, b[0].shape)))
        yield b


distributed.GlooSafeDistributedDL.get_idxs = get_idxs
distributed.GlooSafeDistributedDL.__iter__ = iterate
sys.argv = ["app", *sys.argv[1:]]
runpy.run_module("app", run_name="__main__")
