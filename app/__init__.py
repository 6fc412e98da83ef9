"""AlexNet image classification by transfer learning, from the command line (fastai + Typer)."""

import time as _time

__version__ = "0.1.0"
# When this interpreter reached the package: a command's clock starts here, not at the process's
# creation, which is the shell's when `bash -c "pip install ... && python -m app train"` execs its
# last command in place (a time budget then counted the pip install: 199 s before the scan).
STARTED = _time.time()
