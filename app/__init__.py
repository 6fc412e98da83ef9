"""AlexNet image classification by transfer learning, from the command line (fastai + Typer)."""

__version__ = "0.1.0"
