"""`python -m tools.NAME` from a clone: shims for the commands in the `cxr_fast` package (not installed)."""
