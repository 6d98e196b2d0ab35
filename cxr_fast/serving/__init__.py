"""Serving: a trained model applied to new images.

Owns the model_dir file names a trained model is found by, loading a model with its threshold,
classifying files and datasets (`inference`), Grad-CAM heat maps (`gradcam`) and the SavedModel
that takes encoded bytes (`savedmodel`).  Imports data (imaging, index) and the top-level
utilities; never training or evaluation.
"""
