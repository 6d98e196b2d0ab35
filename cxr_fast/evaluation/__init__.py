"""Evaluation: how good a trained model is, with numbers a reviewer can check.

Owns the metrics (`metrics`, pure numpy/scikit-learn: bootstrap by patient, calibration,
thresholds), scoring a split into predictions and metrics (`scoring`), the figures (`plots`)
and report.md/report.html (`report`).  Imports data, serving (to load and run the model) and
the top-level utilities; never training.
"""
