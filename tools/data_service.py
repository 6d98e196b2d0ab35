"""`python -m tools.data_service` from a clone of the repository: `cxr_fast.data_service` (run a tf.data service dispatcher or worker);
installed, the same command is `cxr-fast-data-service` or `python -m cxr_fast.data_service`."""
from cxr_fast.data_service import run

if __name__ == "__main__":
    run()
