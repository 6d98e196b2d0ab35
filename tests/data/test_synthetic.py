"""The embedded synthetic data set: Kermany layout and names, patients, determinism, a learnable sign."""
import collections
import dataclasses
import hashlib
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from conftest import make_synthetic
from cxr_fast import config as config_lib
from cxr_fast.data import synthetic
from cxr_fast.data import index as dataset_index
from cxr_fast.errors import InputError


def test_layout_names_and_patients(synthetic_dir):
    images, skipped = dataset_index.scan(synthetic_dir)
    top = [im for im in images if not im.path.startswith("chest_xray/chest_xray/")]
    assert {im.official_split for im in top} <= {"train", "val", "test"}
    assert {im.label for im in top} == {0, 1}
    assert not any(im.patient.startswith(dataset_index.UNPARSED_PREFIX) for im in top)
    films = collections.Counter(im.patient for im in top)
    assert max(films.values()) >= 2  # patients with several films
    assert len(images) == 2 * len(top)  # the nested Kaggle copy
    assert {s.reason.split(":")[0] for s in skipped} >= {"macos_metadata", "hidden"}


def test_films_have_realistic_default_sizes():
    config = config_lib.SyntheticConfig(output_dir="unused", num_patients=20, seed=3)
    tasks = synthetic.plan(config)
    assert all(800 <= t.width <= 2200 and 500 <= t.height <= 2200 for t in tasks)
    film = synthetic.draw(tasks[0])
    assert film.shape == (tasks[0].height, tasks[0].width) and film.dtype == np.uint8
    assert 30 < film.mean() < 200 and film.std() > 20


def _digests(root):
    result = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name != "synthetic.json":
                path = os.path.join(folder, name)
                result[os.path.relpath(path, root)] = hashlib.sha1(open(path, "rb").read()).hexdigest()
    return result


def test_same_seed_same_files(tmp_path):
    first = _digests(make_synthetic(tmp_path / "a", num_patients=6, seed=5))
    assert first == _digests(make_synthetic(tmp_path / "b", num_patients=6, seed=5))
    assert first != _digests(make_synthetic(tmp_path / "c", num_patients=6, seed=6))


@pytest.mark.parametrize("difficulty,minimum_auc", [(0.2, 0.9), (0.6, 0.7)])
def test_pneumonia_sign_is_learnable(difficulty, minimum_auc):
    config = config_lib.SyntheticConfig(output_dir="unused", num_patients=160, seed=11, difficulty=difficulty,
                                        min_size=96, max_size=128)
    tasks = synthetic.plan(config)
    features = np.stack([np.asarray(Image.fromarray(synthetic.draw(t)).resize((24, 24)), np.float32).ravel() / 255
                         for t in tasks])
    labels = np.array([t.pneumonia for t in tasks])
    half = len(tasks) // 2
    model = LogisticRegression(C=1.0, max_iter=2000).fit(features[:half], labels[:half])
    auc = roc_auc_score(labels[half:], model.predict_proba(features[half:])[:, 1])
    assert auc > minimum_auc


def test_bad_settings_name_the_flag():
    with pytest.raises(InputError, match="--difficulty"):
        config_lib.SyntheticConfig(output_dir="x", difficulty=2).validate()
    with pytest.raises(InputError, match="--num_patients"):
        config_lib.SyntheticConfig(output_dir="x", num_patients=1).validate()
    with pytest.raises(InputError, match="--position_shift"):
        config_lib.SyntheticConfig(output_dir="x", position_shift=0.7).validate()


def test_positioning_moves_and_turns_the_film_and_leaves_defaults_alone():
    config = config_lib.SyntheticConfig(output_dir="unused", num_patients=6, seed=3, min_size=96, max_size=128)
    task = synthetic.plan(config)[0]
    centred = synthetic.draw(task).astype(np.float32)
    assert np.array_equal(synthetic.draw(task), synthetic.draw(task))
    moved = synthetic.draw(dataclasses.replace(task, position_shift=0.2, position_rotation=10.0)).astype(np.float32)
    assert moved.shape == centred.shape and np.abs(moved - centred).mean() > 10  # the body moved
    # The same film, only placed: brightness and contrast of the body are kept.
    assert abs(moved.mean() - centred.mean()) < 0.25 * centred.mean()
    shifted = config_lib.SyntheticConfig(**{**config.__dict__, "position_shift": 0.2})
    assert [t.seed for t in synthetic.plan(shifted)] == [t.seed for t in synthetic.plan(config)]  # same films
