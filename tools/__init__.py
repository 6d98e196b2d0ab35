"""Command-line tools that prepare data for cxr_fast (run as `python -m tools.NAME`)."""
