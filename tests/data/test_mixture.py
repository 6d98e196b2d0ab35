"""Several record sets as one: aligned findings, the union's masks, mixing weights, exact resume."""
import collections
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cli import ROOT
from cxr_fast.config import DataConfig
from cxr_fast.data import mixture, pipeline
from cxr_fast.errors import InputError
from cxr_fast.tasks import vocabulary


@pytest.fixture(scope="module")
def nih_and_chexpert(labelled_records):
    return labelled_records("nih")[1], labelled_records("chexpert")[1]


def test_vocabulary_aligns_each_sets_names_and_keeps_related_findings_apart():
    assert vocabulary.align("Pleural Effusion") == vocabulary.align("Effusion") == "Effusion"
    assert vocabulary.align("PNEUMONIA") == vocabulary.align("pneumonia") == "Pneumonia"
    assert vocabulary.align("pleural thickening") == "Pleural_Thickening"
    assert vocabulary.align("My Own Finding") == "My Own Finding"  # a CSV's column, unchanged
    for one, other, _ in vocabulary.KEPT_APART:
        assert vocabulary.align(one) != vocabulary.align(other)
    with pytest.raises(ValueError, match="Effusion under two names"):
        vocabulary.aligned(["Effusion", "Pleural Effusion"])


def test_union_of_findings_and_the_columns_each_set_labels(nih_and_chexpert, records_dir):
    nih, chexpert = nih_and_chexpert
    mix = mixture.open_records(f"{nih},{chexpert},{records_dir}")
    assert "Effusion" in mix.findings and "Pleural Effusion" not in mix.findings
    assert mix.findings.count("Pneumonia") == 1 and "Support Devices" in mix.findings
    kermany = mix.columns[2]  # the binary set labels Pneumonia through its one output
    assert [mix.findings[k] for k, c in enumerate(kermany) if c >= 0] == ["Pneumonia"]
    assert mix.columns[0][mix.findings.index("Support Devices")] == -1  # NIH does not label it
    assert mix.weights == pytest.approx([s.num_records("train") / mix.num_records("train") for s in mix.sets])
    counts = mix.finding_counts("train")
    pneumonia = mix.findings.index("Pneumonia")
    own = [s.num_records("train") for s in mix.sets]
    assert sum(counts[pneumonia]) <= sum(own)  # every set labels it, ignored labels left out
    assert sum(counts[mix.findings.index("Hernia")]) == pytest.approx(own[0])  # NIH's films only


def test_findings_flag_and_mix_weights(nih_and_chexpert, records_dir):
    nih, chexpert = nih_and_chexpert
    mix = mixture.open_records(f"{nih},{chexpert}", selected=("Pleural Effusion", "Edema"), mix="3,1")
    assert mix.findings == ("Effusion", "Edema") and mix.weights == pytest.approx((0.75, 0.25))
    assert mixture.open_records(f"{nih},{chexpert}", mix="equal").weights == (0.5, 0.5)
    with pytest.raises(InputError, match="labelled by none of the sets"):
        mixture.open_records(f"{nih},{chexpert}", selected=("Tuberculosis",))
    with pytest.raises(InputError, match="labels none of the findings"):
        mixture.open_records(f"{nih},{records_dir}", selected=("Hernia",))
    with pytest.raises(InputError, match="2 weights for 3"):
        mixture.open_records(f"{nih},{chexpert},{records_dir}", mix="1,2")
    with pytest.raises(InputError, match="twice"):
        mixture.open_records(f"{nih},{nih}")
    with pytest.raises(InputError, match="--mix=1,x"):
        DataConfig(data_dir=nih, mix="1,x").validate()


def _set_of(labels, mix):
    """Which set (NIH 0, CheXpert 1) a film came from: NIH labels Hernia on every film (it has no
    uncertain labels), CheXpert on none."""
    return 0 if labels[mix.findings.index("Hernia")] >= 0 else 1


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_proportional_mix_reads_every_film_once_per_epoch_and_resumes_exactly(nih_and_chexpert, cache):
    nih, chexpert = nih_and_chexpert
    mix = mixture.open_records(f"{nih},{chexpert}", selected=("Effusion", "Hernia", "Support Devices"))
    config = DataConfig(data_dir=mix.root, image_size=32, global_batch_size=4, cache=cache, seed=3)
    steps = mix.num_records("train") // 4
    epoch = [(images.numpy(), labels.numpy()) for images, labels in
             pipeline.train_dataset(mix, config, epochs=1, steps_per_epoch=steps)]
    drawn = collections.Counter(_set_of(row, mix) for _, labels in epoch for row in labels)
    own = [s.num_records("train") for s in mix.sets]
    assert sum(drawn.values()) == steps * 4 and all(drawn[s] <= own[s] for s in range(2))
    assert abs(drawn[0] - own[0] * steps * 4 / sum(own)) <= 4  # proportional within one batch
    films = {images.tobytes() for images_batch, _ in epoch for images in images_batch}
    assert len(films) == steps * 4  # no film twice in an epoch
    assert all(labels[i, 1] == -1 for _, labels in epoch for i in range(len(labels))
               if _set_of(labels[i], mix) == 1)  # CheXpert's films: Hernia masked, not negative
    resumed = [images.numpy() for images, _ in
               pipeline.train_dataset(mix, config, epochs=1, start=(0, 3), steps_per_epoch=steps)]
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate([i for i, _ in epoch[3:]]))


def test_weighted_mix_holds_its_weights_over_many_batches(nih_and_chexpert):
    nih, chexpert = nih_and_chexpert
    mix = mixture.open_records(f"{nih},{chexpert}", selected=("Hernia", "Edema"), mix="1,3")
    config = DataConfig(data_dir=mix.root, image_size=32, global_batch_size=8, cache="memory")
    drawn = collections.Counter()
    for _, labels in pipeline.train_dataset(mix, config, epochs=20):
        drawn.update(_set_of(row, mix) for row in labels.numpy())
    total = sum(drawn.values())
    share = drawn[1] / total  # binomial: 0.75 +- 3 standard errors
    assert abs(share - 0.75) < 3 * np.sqrt(0.75 * 0.25 / total), (drawn, total)


def test_mixed_val_holds_each_sets_films_with_namespaced_patients(nih_and_chexpert):
    nih, chexpert = nih_and_chexpert
    mix = mixture.open_records(f"{nih},{chexpert}")
    config = DataConfig(data_dir=mix.root, image_size=32, global_batch_size=8)
    patients, count = [], 0
    for images, labels, meta in pipeline.eval_dataset(mix, "val", config, with_metadata=True):
        count += len(labels)
        assert labels.shape[1] == len(mix.findings)
        patients += [p.decode() for p in meta["patient"].numpy()]
    assert count == mix.num_records("val")
    assert {p.split("/")[0] for p in patients} == {mix.set_name(0), mix.set_name(1)}


def test_the_loss_of_a_mixed_batch_gives_no_gradient_where_a_set_does_not_label(nih_and_chexpert):
    from cxr_fast.tasks import task as task_lib

    nih, chexpert = nih_and_chexpert
    mix = mixture.open_records(f"{nih},{chexpert}")
    task = task_lib.for_record_set(mix)
    config = DataConfig(data_dir=mix.root, image_size=32, global_batch_size=16, cache="memory")
    _, labels = next(iter(pipeline.train_dataset(mix, config)))
    outputs = tf.Variable(tf.fill(labels.shape, 0.5))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(task.weighted_losses(labels, outputs, tf.ones([len(mix.findings), 2])))
    gradient = tape.gradient(loss, outputs).numpy()
    support = mix.findings.index("Support Devices")  # CheXpert's only
    nih_rows = [i for i, row in enumerate(labels.numpy()) if _set_of(row, mix) == 0]
    assert nih_rows and all(gradient[i, support] == 0 for i in nih_rows)
    labelled = labels.numpy() >= 0
    assert np.all(gradient[labelled] != 0) and np.all(gradient[~labelled] == 0)


def test_a_mix_is_opened_and_checked_without_tensorflow(nih_and_chexpert):
    # `train` checks --data_dir, --findings and --mix this way before TensorFlow loads
    code = ("import sys; from cxr_fast.data import mixture; import cxr_fast.train; "
            f"mixture.open_records({','.join(nih_and_chexpert)!r}).check_batch_size(8); "
            "assert 'tensorflow' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_formats_stand_in_trains_in_one_mix(labelled_records, records_dir):
    formats = ("nih", "chexpert", "mimic", "rsna", "csv")
    mix = mixture.open_records(",".join([records_dir] + [labelled_records(f)[1] for f in formats]))
    own = dict(zip(("kermany",) + formats, mix.columns))
    labels_of = {name: {mix.findings[k] for k, c in enumerate(columns) if c >= 0} for name, columns in own.items()}
    assert labels_of["kermany"] == labels_of["rsna"] == {"Pneumonia"}  # both binary sets' positive class
    assert labels_of["mimic"] == labels_of["chexpert"] and "Effusion" in labels_of["mimic"]  # Pleural Effusion
    assert labels_of["csv"] == {"opacity", "Effusion", "Nodule"}  # its own column names, aligned where known
    assert "Effusion" in labels_of["nih"] & labels_of["chexpert"] & labels_of["csv"]
    config = DataConfig(data_dir=mix.root, image_size=32, global_batch_size=32, cache="none")
    _, labels = next(iter(pipeline.train_dataset(mix, config)))
    assert labels.shape == (32, len(mix.findings)) and np.all(np.isin(labels.numpy(), (-1.0, 0.0, 1.0)))
