"""Judging a trained model: metrics and fastai's interpretation, the figures (one table of them),
report.html, compare and the review TUI. Imports core, data and model; never shipping."""
