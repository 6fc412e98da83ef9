"""Training: presets, the epochs a run makes, opening a run, the fastai callbacks, resume state, the
time budget, lr-find, fitting, and what runs after a fit (evaluation, report, export). The top
of the library: imports every layer below it."""
