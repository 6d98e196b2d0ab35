"""`python -m tools.make_tfrecords` from a clone of the repository: `cxr_fast.make_tfrecords` (convert a data set to a TFRecord set);
installed, the same command is `cxr-fast-make-tfrecords` or `python -m cxr_fast.make_tfrecords`."""
from cxr_fast.make_tfrecords import run

if __name__ == "__main__":
    run()
