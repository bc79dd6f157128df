"""Evaluation: segmentation metrics, validation during training, panels, prediction of a
split (test-time augmentation, dense CRF) and scoring of predicted masks."""
