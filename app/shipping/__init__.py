"""Shipping a model: export (the learner pickle and the pickle-free bundle) and predict. Imports
core, data and model; never evaluation. Bundle predict imports neither torch nor fastai."""
