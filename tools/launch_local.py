"""`python -m tools.launch_local` from a clone of the repository: `cxr_fast.launch_local` (start a multi-worker run on this machine);
installed, the same command is `cxr-fast-launch-local` or `python -m cxr_fast.launch_local`."""
from cxr_fast.launch_local import run

if __name__ == "__main__":
    run()
