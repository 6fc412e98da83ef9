"""Auditing a dataset with its model: which labels are wrong (cleanlab's confident learning on
out-of-sample probabilities from K-fold training runs), which validation images leak from training
and which images are near copies (the model body's pooled features), which images are of low
quality (cleanvision), with Grad-CAM and calibration from evaluation. Sits above training (each fold
is a training run); writes only into its own run-like folder, never into the dataset."""
