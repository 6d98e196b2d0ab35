"""`python -m tools.make_synthetic` from a clone of the repository: `cxr_fast.make_synthetic` (generate a synthetic data set);
installed, the same command is `cxr-fast-make-synthetic` or `python -m cxr_fast.make_synthetic`."""
from cxr_fast.make_synthetic import run

if __name__ == "__main__":
    run()
