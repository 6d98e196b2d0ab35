"""The two tasks a record set can pose, as Model Garden's Task: the one place that tells them apart.

    BinaryTask    one sigmoid: Kermany (NORMAL, PNEUMONIA), RSNA (NO_PNEUMONIA, PNEUMONIA).
                  Labels [B] of 0 or 1; `classes` = (negative, positive).
    FindingsTask  one sigmoid per finding: NIH, CheXpert, MIMIC, any CSV of findings.
                  Labels [B, findings] of 1, 0 or -1 (ignored: left out of loss and metrics).

A task owns the head's size, the labels the pipeline hands the step, the class weights and the
loss, the scores and thresholds, the rows of predictions.csv and `predict`, and the outputs of
the serving signature; the stages call it instead of branching.  `create` picks the task from
the names a manifest or config.json holds.
"""
from cxr_fast.errors import InputError
from cxr_fast.tasks import binary_metrics, finding_metrics, vocabulary

ANY_FINDING = ("NO_FINDING", "ANY_FINDING")  # what a multi-label set counts per film (manifest "classes")


def _tensorflow():
    """(TensorFlow, Keras), imported when a task first builds graph ops: the entry points open and
    check record sets through their tasks (`data.mixture`) before TensorFlow loads."""
    import keras
    import tensorflow as tf
    return tf, keras


def create(findings=(), classes=()):
    """A FindingsTask when `findings` are named, else a BinaryTask of `classes` (negative, positive)."""
    return FindingsTask(tuple(findings)) if findings else BinaryTask(tuple(classes))


def for_record_set(record_set):
    """The task of a record set, from its manifest."""
    return create(record_set.findings, record_set.classes)


def _thresholds(threshold, outputs):
    """One threshold per output: a number serves all; a list (`evaluate --threshold=auto` on a
    multi-label set) needs one per output."""
    if not isinstance(threshold, (list, tuple)):
        return [float(threshold)] * outputs
    if len(threshold) != outputs:
        raise InputError(f"threshold.json holds {len(threshold)} thresholds for a model of {outputs} outputs; "
                         "run evaluate --threshold=auto again")
    return [float(t) for t in threshold]


def _threshold_method(target_recall):
    return f"target recall {target_recall}" if target_recall else "Youden's J"


class BinaryTask:
    """One sigmoid: the probability of the positive class."""

    kind = "binary"
    head_name = "pneumonia"
    findings = ()

    def __init__(self, classes):
        self.classes = classes
        self.outputs = 1

    def output_names(self):
        """The aligned finding each output scores (`vocabulary`): the positive class's."""
        return (vocabulary.align(self.classes[1]),)

    # ---- data
    def manifest_fields(self):
        return {"task": self.kind, "classes": list(self.classes), "findings": []}

    def required_labels(self):
        """(label, name) pairs a training set must hold at least one readable image of."""
        return list(enumerate(self.classes))

    def class_text(self, image):
        return self.classes[image.label]

    def label_counts(self, images):
        """What the manifest counts per split beyond the classes: nothing for a binary set."""
        return {}

    def splits_columns(self, image=None):
        """splits.csv's columns beyond file, patient, label, split, sha1 (header without `image`)."""
        return []

    def labels(self, label, findings):
        """The labels the step gets, from a parsed batch's LABEL [B] and FINDINGS [B, F] (unused here)."""
        tf, _ = _tensorflow()
        return tf.cast(label, tf.float32)

    def source_columns(self):
        """Where each output's label is among a record's [LABEL, FINDINGS...]: LABEL."""
        return (0,)

    # ---- training
    def model_fields(self):
        """What the model's configuration records of the task (config.json, read back by serving)."""
        return {"classes": self.classes, "findings": ()}

    def describe(self):
        return f"binary set: {self.classes[1]} against {self.classes[0]}"

    def output_counts(self, record_set, split):
        """[(positive, negative)] of the one output in a split."""
        negative, positive = record_set.class_counts(split)
        return [(positive, negative)]

    def class_weights(self, record_set, mode):
        """sklearn's 'balanced' formula on the training split's class counts: [w(negative), w(positive)]."""
        counts = record_set.class_counts("train")
        if mode == "none":
            return [1.0] * len(counts)
        total = sum(counts)
        return [total / (len(counts) * c) if c else 1.0 for c in counts]

    def weighted_losses(self, labels, probs, weight_table):
        """Class-weighted cross-entropy per image [B]."""
        tf, keras = _tensorflow()
        per_example = keras.losses.binary_crossentropy(labels[:, None], probs)
        return per_example * tf.gather(weight_table, tf.cast(labels, tf.int32))

    def predictions(self, probs):
        """The model's [B, 1] as the [B] probabilities the metrics take."""
        tf, _ = _tensorflow()
        return tf.reshape(probs, [-1])

    # ---- scoring
    def score(self, labels, probs, threshold=0.5):
        return binary_metrics.binary_metrics(labels, probs, threshold)

    def aucs(self, scores):
        """{aligned finding: AUC} from this task's scores (`score`, `evaluate`)."""
        return {self.output_names()[0]: scores.get("auc")}

    def choose_threshold(self, labels, probs, target_recall=None):
        """(threshold, how it was chosen) on validation predictions."""
        threshold = binary_metrics.choose_threshold(labels, probs, target_recall)
        return threshold, {"method": _threshold_method(target_recall), "chosen_on": "val", "threshold": threshold,
                           "val": self.score(labels, probs, threshold)}

    def evaluate(self, labels, probs, patients, threshold, bootstrap_samples, anchors=None):
        """metrics.json's numbers: `binary_metrics.evaluate` (anchors are the report's, not used here)."""
        return binary_metrics.evaluate(labels, probs, patients, threshold, bootstrap_samples)

    def prediction_rows(self, files, patients, labels, probs, threshold):
        """predictions.csv: a header, then a row per film."""
        yield ["file", "patient", "label", "probability", "predicted"]
        for file, patient, label, prob in zip(files, patients, labels, probs):
            yield [file, patient, int(label), repr(float(prob)), int(prob >= threshold)]

    # ---- serving
    def output_thresholds(self, outputs, threshold):
        """The threshold of each of the model's outputs, after checking there is one output."""
        if outputs != 1:
            raise InputError(f"the model has {outputs} outputs but no finding names were found beside it "
                             "(config.json); keep model.keras in its training folder")
        return _thresholds(threshold, outputs)

    def result(self, probs, found, threshold):
        """`predict`'s answer for one film from its output row and which outputs reached their threshold."""
        return {"probability": float(probs[0]), "label": self.classes[int(found[0])], "threshold": threshold}

    def gradcam_targets(self, found):
        """(output, name) pairs a film's Grad-CAM maps are drawn for: the one output, unnamed."""
        return [(0, None)]

    def gradcam_result(self, paths):
        """`gradcam` in a film's answer from {name: overlay path}: the one path."""
        return paths[None]

    def serving_names(self):
        """The names the serving signature answers with: the classes."""
        return list(self.classes)

    def serving_outputs(self, probabilities, ok, error, threshold, names):
        """Per image: probability, label (0/1), class and error; -1 / "" for an image not scored."""
        tf, _ = _tensorflow()
        probability = tf.reshape(probabilities, [-1])
        label = tf.where(ok, tf.cast(probability >= threshold, tf.int32), -1)
        return {"probability": tf.where(ok, probability, -1.0), "label": label,
                "class": tf.where(ok, tf.gather(names, tf.maximum(label, 0)), ""), "error": error}

    def describe_outputs(self):
        return f"probability, label, class ({' or '.join(self.classes)}), error"


class FindingsTask:
    """One sigmoid per finding; a label of -1 is ignored in the loss and in every metric."""

    kind = "multilabel"
    head_name = "findings"
    classes = ANY_FINDING

    def __init__(self, findings):
        self.findings = findings
        self.outputs = len(findings)

    def output_names(self):
        return tuple(vocabulary.align(name) for name in self.findings)

    # ---- data
    def manifest_fields(self):
        return {"task": self.kind, "classes": list(self.classes), "findings": list(self.findings)}

    def required_labels(self):
        return []

    def class_text(self, image):
        return "|".join(name for name, value in zip(self.findings, image.findings) if value == 1.0) or "none"

    def label_counts(self, images):
        """Per finding: positive, negative and ignored labels among `images`."""
        counts = {name: {"positive": 0, "negative": 0, "ignored": 0} for name in self.findings}
        for image in images:
            for name, value in zip(self.findings, image.findings):
                counts[name]["positive" if value == 1.0 else "negative" if value == 0.0 else "ignored"] += 1
        return {"findings": counts}

    def splits_columns(self, image=None):
        """The `findings` column: 1, 0 or -1 (ignored) per finding, space-separated."""
        return ["findings"] if image is None else [" ".join(f"{v:g}" for v in image.findings)]

    def labels(self, label, findings):
        return findings

    def source_columns(self):
        return tuple(range(1, self.outputs + 1))

    # ---- training
    def model_fields(self):
        return {"classes": self.classes, "findings": self.findings}

    def describe(self):
        return f"multi-label set: {len(self.findings)} findings ({', '.join(self.findings)})"

    def output_counts(self, record_set, split):
        """[(positive, negative)] per finding in a split, ignored labels left out."""
        return record_set.finding_counts(split)

    def class_weights(self, record_set, mode):
        """[[w(negative), w(positive)]] per finding: the 'balanced' formula over the finding's labels
        that are not ignored (1 for a finding with one class)."""
        if mode == "none":
            return [[1.0, 1.0] for _ in self.findings]
        return [[(p + n) / (2 * n), (p + n) / (2 * p)] if p and n else [1.0, 1.0]
                for p, n in self.output_counts(record_set, "train")]

    def weighted_losses(self, labels, probs, weight_table):
        """Class-weighted cross-entropy per label [B, findings]; ignored labels weigh 0."""
        tf, keras = _tensorflow()
        known = labels >= 0
        targets = tf.where(known, labels, 0.0)
        per_label = keras.losses.binary_crossentropy(targets[..., None], probs[..., None])
        weights = tf.where(targets > 0.5, weight_table[:, 1], weight_table[:, 0])
        return per_label * weights * tf.cast(known, tf.float32)

    def predictions(self, probs):
        return probs

    # ---- scoring
    def score(self, labels, probs, threshold=0.5):
        """Macro AUC as `auc`, so the loop's val_auc means the same for both tasks."""
        return finding_metrics.scores(labels, probs, self.findings, threshold)

    def aucs(self, scores):
        return {name: scores["per_finding"][own]["auc"] for name, own in zip(self.output_names(), self.findings)}

    def choose_threshold(self, labels, probs, target_recall=None):
        """(one threshold per finding, how they were chosen) on validation predictions."""
        threshold = finding_metrics.choose_thresholds(labels, probs, target_recall)
        return threshold, {"method": _threshold_method(target_recall) + " per finding", "chosen_on": "val",
                           "threshold": threshold, "findings": list(self.findings),
                           "val": self.score(labels, probs, threshold)}

    def evaluate(self, labels, probs, patients, threshold, bootstrap_samples, anchors=None):
        return finding_metrics.evaluate(labels, probs, patients, self.findings, threshold, bootstrap_samples,
                                        anchors=anchors)

    def prediction_rows(self, files, patients, labels, probs, threshold):
        """predictions.csv: file, patient, then label_* (-1: ignored) and probability_* per finding."""
        yield ["file", "patient", *(f"label_{n}" for n in self.findings),
               *(f"probability_{n}" for n in self.findings)]
        for file, patient, label_row, prob_row in zip(files, patients, labels, probs):
            yield [file, patient, *(int(v) for v in label_row), *(repr(float(p)) for p in prob_row)]

    # ---- serving
    def output_thresholds(self, outputs, threshold):
        """The threshold of each finding, after checking the model has one output per finding."""
        if outputs != self.outputs:
            raise InputError(f"the model has {outputs} outputs but {self.outputs} finding names were found beside "
                             "it (config.json); keep model.keras in its training folder")
        return _thresholds(threshold, outputs)

    def result(self, probs, found, threshold):
        return {"probabilities": {n: float(p) for n, p in zip(self.findings, probs)},
                "findings": [n for n, hit in zip(self.findings, found) if hit], "threshold": threshold}

    def gradcam_targets(self, found):
        """A map per finding found."""
        return [(k, name) for k, name in enumerate(self.findings) if found[k]]

    def gradcam_result(self, paths):
        return paths

    def serving_names(self):
        return list(self.findings)

    def serving_outputs(self, probabilities, ok, error, threshold, names):
        """Per image: probabilities and labels [findings], the findings found joined by "|" (as NIH
        writes them) and error; -1 / "" for an image not scored."""
        tf, _ = _tensorflow()
        positive = probabilities >= threshold
        joined = tf.strings.reduce_join(tf.ragged.boolean_mask(tf.broadcast_to(names[None], tf.shape(positive)),
                                                               positive), axis=1, separator="|")
        kept = ok[:, None]
        return {"probabilities": tf.where(kept, probabilities, -1.0),
                "labels": tf.where(kept, tf.cast(positive, tf.int32), -1),
                "findings": tf.where(ok, joined, ""), "error": error}

    def describe_outputs(self):
        return f"probabilities and labels per finding ({', '.join(self.findings)}), findings, error"
