"""Data: from image files (or a label file) to a checked TFRecord set, and from records to batches.

Owns finding images and patients and splitting them (`index`, pure Python), decoding any image
to gray uint8 (`imaging`), the record layout (`schema`), the manifest and shard checks without
TensorFlow (`recordset`), conversion (`writer`), the synthetic set (`synthetic`) and the tf.data
pipelines (`pipeline`).  Imports nothing of cxr_fast but the top-level config, errors, atomic
and workers modules.
"""
