"""The model layer: AlexNet's weights (the --weights resolver), building and loading a fastai
Learner, the model-side callbacks and the bundle format. Imports core and data."""
