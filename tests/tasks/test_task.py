"""The two tasks: loss, class weights, thresholds, answers and serving outputs, each against values
worked out by hand; the stages' own tests run them through the commands."""
import numpy as np
import pytest
import tensorflow as tf

from cxr_fast.data.index import ImageFile
from cxr_fast.errors import InputError
from cxr_fast.tasks import task as task_lib

BINARY = task_lib.create((), ("NO_PNEUMONIA", "PNEUMONIA"))
FINDINGS = task_lib.create(("a", "b", "c"), ("a", "b", "c"))


class Counts:
    """A record set's training counts, as `RecordSet.class_counts` / `finding_counts` give them."""

    def class_counts(self, split):
        return [30, 10]

    def finding_counts(self, split):
        return [(5, 15), (0, 20), (8, 8)]  # (positive, negative) per finding; b has no positive


def test_create_picks_the_task_from_the_names():
    assert (BINARY.kind, BINARY.outputs, BINARY.head_name) == ("binary", 1, "pneumonia")
    assert (FINDINGS.kind, FINDINGS.outputs, FINDINGS.head_name) == ("multilabel", 3, "findings")
    assert BINARY.manifest_fields() == {"task": "binary", "classes": ["NO_PNEUMONIA", "PNEUMONIA"], "findings": []}
    assert FINDINGS.manifest_fields()["findings"] == ["a", "b", "c"]
    assert task_lib.create(**FINDINGS.model_fields()).findings == FINDINGS.findings  # config.json round trip
    assert task_lib.create(**BINARY.model_fields()).classes == BINARY.classes


def test_class_weights_follow_the_balanced_formula():
    assert BINARY.class_weights(Counts(), "balanced") == pytest.approx([40 / 60, 40 / 20])
    assert BINARY.class_weights(Counts(), "none") == [1.0, 1.0]
    weights = FINDINGS.class_weights(Counts(), "balanced")
    assert weights[0] == pytest.approx([20 / 30, 20 / 10]) and weights[1] == [1.0, 1.0]  # one class: ones
    assert weights[2] == pytest.approx([1.0, 1.0])
    assert FINDINGS.class_weights(Counts(), "none") == [[1.0, 1.0]] * 3


def test_binary_loss_weighs_each_image_by_its_class():
    losses = BINARY.weighted_losses(tf.constant([1.0, 0.0]), tf.constant([[0.8], [0.8]]),
                                    tf.constant([0.5, 3.0])).numpy()
    np.testing.assert_allclose(losses, [-3 * np.log(0.8), -0.5 * np.log(0.2)], rtol=1e-5)


def test_ignored_labels_are_masked_and_weights_are_per_finding():
    table = tf.constant([[1.0, 1.0], [1.0, 4.0], [1.0, 1.0]])
    probs = tf.constant([[0.9, 0.2, 0.5], [0.1, 0.7, 0.5]])
    labels = tf.constant([[1.0, 1.0, -1.0], [0.0, -1.0, 1.0]])
    losses = FINDINGS.weighted_losses(labels, probs, table).numpy()
    assert losses[0, 2] == 0 and losses[1, 1] == 0  # ignored: no loss, no gradient
    assert losses[0, 1] == pytest.approx(-4 * np.log(0.2), rel=1e-5)  # finding b's positives weigh 4
    assert losses[1, 2] == pytest.approx(-np.log(0.5), rel=1e-5)
    outputs = tf.Variable(probs)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(FINDINGS.weighted_losses(labels, outputs, table))
    gradient = tape.gradient(total, outputs).numpy()
    assert gradient[0, 2] == 0 and gradient[1, 1] == 0  # ignored labels pull no output anywhere
    assert gradient[0, 0] < 0 and gradient[1, 0] > 0 and abs(gradient[0, 1]) > 3 * abs(gradient[0, 0])


def test_thresholds_are_chosen_on_val_and_checked_against_the_outputs():
    threshold, choice = BINARY.choose_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.6, 0.9]))
    assert threshold == pytest.approx(0.6) and choice["method"] == "Youden's J" and choice["val"]["accuracy"] == 1
    labels = np.array([[1, 0, 1], [0, -1, 0], [1, 1, 1], [0, 0, 0]])
    probs = np.array([[0.6, 0.2, 0.9], [0.1, 0.99, 0.2], [0.7, 0.4, 0.8], [0.3, 0.1, 0.1]])
    threshold, choice = FINDINGS.choose_threshold(labels, probs, target_recall=1.0)
    assert len(threshold) == 3 and choice["method"] == "target recall 1.0 per finding"
    assert choice["findings"] == ["a", "b", "c"]
    assert FINDINGS.output_thresholds(3, 0.4) == [0.4] * 3 and FINDINGS.output_thresholds(3, threshold) == threshold
    for task, outputs, threshold in ((FINDINGS, 2, 0.5), (FINDINGS, 3, [0.5]), (BINARY, 3, 0.5), (BINARY, 1, [0.5, 0.5])):
        with pytest.raises(InputError):
            task.output_thresholds(outputs, threshold)


def test_answers_and_rows_name_the_classes_or_the_findings():
    assert BINARY.result(np.array([0.7]), np.array([True]), 0.5) == {"probability": pytest.approx(0.7),
                                                                   "label": "PNEUMONIA", "threshold": 0.5}
    answer = FINDINGS.result(np.array([0.7, 0.1, 0.5]), np.array([True, False, True]), [0.5, 0.5, 0.5])
    assert answer["findings"] == ["a", "c"] and list(answer["probabilities"]) == ["a", "b", "c"]
    assert FINDINGS.gradcam_targets([True, False, True]) == [(0, "a"), (2, "c")]
    assert BINARY.gradcam_targets([False]) == [(0, None)] and BINARY.gradcam_result({None: "p.png"}) == "p.png"
    rows = list(BINARY.prediction_rows(["f"], ["p"], [1], [0.25], 0.5))
    assert rows == [["file", "patient", "label", "probability", "predicted"], ["f", "p", 1, "0.25", 0]]
    rows = list(FINDINGS.prediction_rows(["f"], ["p"], [[1, -1, 0]], [[0.5, 0.25, 0.125]], 0.5))
    assert rows[0][2:5] == ["label_a", "label_b", "label_c"] and rows[1] == ["f", "p", 1, -1, 0, "0.5", "0.25", "0.125"]


def test_manifest_counts_and_split_columns():
    films = [ImageFile("x.png", 1, "p1", None, findings=(1.0, -1.0, 0.0)), ImageFile("y.png", 0, "p2", None, findings=(0.0, 0.0, 0.0))]
    counts = FINDINGS.label_counts(films)["findings"]
    assert counts["a"] == {"positive": 1, "negative": 1, "ignored": 0} and counts["b"]["ignored"] == 1
    assert FINDINGS.class_text(films[0]) == "a" and FINDINGS.class_text(films[1]) == "none"
    assert FINDINGS.splits_columns() == ["findings"] and FINDINGS.splits_columns(films[0]) == ["1 -1 0"]
    assert BINARY.label_counts(films) == {} and BINARY.splits_columns(films[0]) == []
    assert BINARY.class_text(films[0]) == "PNEUMONIA" and BINARY.required_labels() == [(0, "NO_PNEUMONIA"),
                                                                                       (1, "PNEUMONIA")]


def test_serving_outputs_mark_images_not_scored():
    ok, error = tf.constant([True, False]), tf.constant(["", "refused"])
    out = BINARY.serving_outputs(tf.constant([[0.7], [0.9]]), ok, error, tf.constant(0.5),
                                 tf.constant(BINARY.serving_names()))
    assert out["label"].numpy().tolist() == [1, -1] and out["probability"].numpy()[1] == -1
    assert [c.decode() for c in out["class"].numpy()] == ["PNEUMONIA", ""]
    out = FINDINGS.serving_outputs(tf.constant([[0.7, 0.1, 0.6], [0.9, 0.9, 0.9]]), ok, error,
                                   tf.constant([0.5, 0.5, 0.65]), tf.constant(FINDINGS.serving_names()))
    assert [f.decode() for f in out["findings"].numpy()] == ["a", ""]  # c's 0.6 is under its own 0.65
    assert out["labels"].numpy().tolist() == [[1, 0, 0], [-1, -1, -1]]
