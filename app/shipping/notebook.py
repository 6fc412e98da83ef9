"""The image decoder the exported learner pickle carries, so that `load_learner(pkl).predict(path)`
in a plain notebook (this package not installed) decodes a file as training did: EXIF rotation,
alpha flattened onto white, 16-bit and float images scaled, CMYK, palettes, first frames.

The decoder is data/images.py itself: its source text, with a small fastai Transform appended, is
exec'd into a fresh namespace. The Transform pickles as `builtins.eval` of an expression that
holds that source and rebuilds it, so the pickle names only builtins (and fastai, torch, PIL,
NumPy, which the source imports), never `app`; a notebook that re-exports the learner pickles it
the same way; and a change to data/images.py reaches the next export without any other edit.
A pickle runs code when loaded in any case: this code is plain text inside it, readable with
`pickletools`.
"""

from __future__ import annotations

import inspect

# Appended to data/images.py's source; `_SOURCE` (the whole text) is in the namespace it runs in.
DECODER = '''

from fastai.vision.core import PILImage as _PILImage
from fasttransform import Transform as _Transform
from torch import Tensor as _Tensor


def _expression(source):
    """Python that rebuilds the decoder from `source` in a fresh namespace (what the pickle holds)."""
    return ("(lambda ns: (exec(ns['_SOURCE'], ns), ns['AppImageDecoder']())[1])"
            f"({{'__name__': 'alexnet_cli_decoder', '_SOURCE': {source!r}}})")


class AppImageDecoder(_Transform):
    """fastai's PILImage.create for files, decoded the way alexnet-cli trains (open_rgb above)."""

    input_types = (Path, str, _Tensor, np.ndarray, bytes, Image.Image)  # what test_dl may be given, as fastai's

    def encodes(self, fn: Path | str | _Tensor | np.ndarray | bytes | Image.Image):  # PILImage.create's inputs
        if isinstance(fn, (str, Path)):
            return _PILImage(open_rgb(fn))
        if isinstance(fn, Image.Image):  # upright, loaded, RGB (a copy: the caller's image is left alone)
            return _PILImage(to_rgb(ImageOps.exif_transpose(fn)))
        return _PILImage.create(fn)

    def __reduce__(self):
        return (eval, (_expression(_SOURCE),))
'''


def decoder_source() -> str:
    """data/images.py's source with the decoder Transform appended: self-contained (it may import only
    the standard library, NumPy, PIL and fastai, never this package)."""
    from ..data import images

    src = inspect.getsource(images) + DECODER
    if "from ." in src or "import app" in src:
        raise RuntimeError("data/images.py imports this package: the learner pickle could not decode without it")
    return src


def make_decoder():
    """A fresh AppImageDecoder, built exactly as a notebook rebuilds it when it loads the pickle."""
    src = decoder_source()
    ns = {"__name__": "alexnet_cli_decoder", "_SOURCE": src}
    exec(compile(src, "<alexnet-cli image decoder>", "exec"), ns)
    return eval(ns["_expression"](src))
