"""Tasks: what a model predicts for a record set, and how it is trained and scored on it.

The lowest stage above the top-level utilities: `task` (BinaryTask, FindingsTask and the
factories that choose one), `binary_metrics` and `finding_metrics` (pure numpy / scikit-learn
functions of labels and probabilities).  Every stage above asks its task instead of branching on
binary vs multi-label (tests/test_layering.py holds that rule).
"""
