"""Evaluation: how good a trained model is, with numbers a reviewer can check.

Owns scoring a split into predictions and metrics (`scoring`, through the record set's task,
whose metric functions live in `cxr_fast.tasks`), each task's figures and report blocks
(`binary_report`, `findings_report`), the figures (`plots`) and report.md/report.html
(`report`).  Imports tasks, data, serving (to load and run the model) and the top-level
utilities; never training.
"""
