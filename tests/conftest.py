"""Shared fixtures: a tiny synthetic chest X-ray folder and its TFRecord set, made once per session."""
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from cxr_fast import config as config_lib  # noqa: E402


def make_synthetic(path, num_patients=40, seed=0, kaggle_quirks=False, difficulty=0.3):
    from cxr_fast.data import synthetic

    config = config_lib.SyntheticConfig(output_dir=str(path), num_patients=num_patients, seed=seed,
                                        difficulty=difficulty, min_size=96, max_size=160,
                                        kaggle_quirks=kaggle_quirks, num_workers=1)
    synthetic.generate(config, log=lambda *_: None)
    return str(path)


def convert(data_dir, output_dir, **overrides):
    from cxr_fast.data import writer

    settings = dict(data_dir=str(data_dir), output_dir=str(output_dir), image_size=32, num_workers=1)
    settings.update(overrides)
    return writer.convert(config_lib.ConvertConfig(**settings), log=lambda *_: None)


LABEL_OPTIONS = {  # what each format's conversion needs beyond --labels and --format
    "csv": dict(path_column="file", patient_column="patient", label_columns=("opacity", "effusion", "nodule"),
                view_column="view"),
}


def make_labelled(path, format, num_patients=16, seed=0):
    """A synthetic stand-in of a label-file set; returns its label file."""
    from cxr_fast.data import synthetic_labelled

    config = config_lib.SyntheticConfig(output_dir=str(path), num_patients=num_patients, seed=seed, min_size=48,
                                        max_size=48, format=format, num_workers=1)
    return synthetic_labelled.generate(config, log=lambda *_: None)


@pytest.fixture(scope="session")
def labelled_records(tmp_path_factory):
    """format -> (label file, record set) of a 16-patient synthetic set at 32 px, made once per session."""
    made = {}

    def get(format):
        if format not in made:
            root = tmp_path_factory.mktemp(f"labelled_{format}")
            labels = make_labelled(root / "data", format)
            manifest = convert(root / "data", root / "records", labels=labels, format=format,
                               **LABEL_OPTIONS.get(format, {}))
            made[format] = labels, str(root / "records"), manifest
        return made[format]

    return get


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """40 patients in the Kaggle layout, with its nested duplicate copy and __MACOSX junk."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic") / "data", kaggle_quirks=True)


@pytest.fixture(scope="session")
def records_dir(synthetic_dir, tmp_path_factory):
    """The synthetic set as 32 px JPEG records, patient split, several shards per split."""
    out = tmp_path_factory.mktemp("records") / "jpeg32"
    convert(synthetic_dir, out, shard_size_mb=0.004)
    return str(out)


@pytest.fixture
def copy_of(records_dir, tmp_path):
    """A private copy of the shared record set, for tests that damage it."""
    target = tmp_path / "records"
    shutil.copytree(records_dir, target)
    return str(target)


@pytest.fixture(scope="session")
def tiny_model_dir(records_dir, tmp_path_factory):
    """A model trained for a few steps on `records_dir` (the tiny CNN, 32 px), exported too."""
    from cxr_fast.training import loop
    from cxr_fast.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig

    root = tmp_path_factory.mktemp("tiny_model")
    config = TrainConfig(model_dir=str(root / "model"), data=DataConfig(data_dir=records_dir, image_size=32,
                                                                       global_batch_size=8),
                         model=ModelConfig(backbone="tiny", image_size=32, weights="none"),
                         augment=AugmentConfig(kind="none"), epochs=2, steps_per_epoch=3,
                         export_dir=str(root / "export"))
    loop.train_and_evaluate(config, log=lambda *_: None)
    return str(root / "model")


def pytest_collection_modifyitems(items):
    """Files marked `heavy(seconds)` (module `pytestmark`) first, longest first: with two test
    processes (setup.cfg), the long files then run beside each other and the many short ones
    instead of trailing alone at the end."""
    def weight(item):
        marker = item.get_closest_marker("heavy")
        return -(marker.args[0] if marker and marker.args else 0)

    items.sort(key=weight)
