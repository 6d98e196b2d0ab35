"""cxr_fast: a high-throughput TensorFlow training pipeline for chest X-ray classifiers."""

__version__ = "0.1.0"
