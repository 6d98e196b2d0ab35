"""Training: the model and everything that changes its weights.

Owns the EfficientNet + reference head (`model`), the augmentation that runs on the replica's
device inside the step (`augment`), the compiled per-replica step and loss scaling (`steps`),
`train_and_evaluate` (`loop`) and what lets a run stop and resume (`checkpointing`).  The top
stage: it may import data, distributed, serving, evaluation and the top-level utilities.
"""
