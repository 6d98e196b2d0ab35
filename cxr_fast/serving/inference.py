"""Classifying new image files with a trained model, the way training saw its images.

Each file goes through `cxr_fast.data.imaging.load_gray` (the converter's own decode, gray, squash
and antialiased resize), so a prediction sees exactly the preprocessing of the training shards.
Unreadable, non-image and oversized files become error results; the others are still scored.
"""
import json
import os

import keras
import numpy as np

from cxr_fast.data import imaging
from cxr_fast.data import index as dataset_index
from cxr_fast.errors import InputError
from cxr_fast.serving import gradcam
from cxr_fast.tasks import task as task_lib

FINAL_MODEL = "model.keras"  # in model_dir, written by training
THRESHOLD_FILE = "threshold.json"  # in model_dir, written by `evaluate --threshold=auto`


def saved_threshold(model_dir, default=0.5):
    """The threshold `evaluate --threshold=auto` saved in model_dir (a multi-label model's: a list,
    one per finding), else `default`."""
    path = os.path.join(model_dir, THRESHOLD_FILE)
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        saved = json.load(f)["threshold"]
    return [float(t) for t in saved] if isinstance(saved, list) else float(saved)


def load(model_path, flag="--model"):
    """(model, threshold) from a model.keras file or a training output folder.

    The threshold is the one `evaluate --threshold=auto` saved beside the model, else 0.5.
    """
    path = os.path.join(model_path, FINAL_MODEL) if os.path.isdir(model_path) else model_path
    if not os.path.isfile(path):
        raise InputError(f"{flag}={model_path} holds no {FINAL_MODEL}; train first (python -m cxr_fast.train) "
                         "or pass the model file")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:
        raise InputError(f"{flag}={path} is not a loadable Keras model ({type(err).__name__})") from None
    return model, saved_threshold(os.path.dirname(os.path.abspath(path)))


def run_config(model_path):
    """The training run's config.json beside model.keras (a training folder or the model file);
    {} without one (a bare model file)."""
    folder = model_path if os.path.isdir(model_path) else os.path.dirname(os.path.abspath(model_path))
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def task_of(model_path):
    """The task of a model, from config.json beside model.keras: its findings or its class names;
    Kermany's NORMAL, PNEUMONIA when it names neither (a bare model file)."""
    settings = run_config(model_path).get("model", {})
    return task_lib.create(settings.get("findings") or (), settings.get("classes") or dataset_index.CLASS_NAMES)


def expand(paths):
    """Files as given, folders replaced by the image files below them (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names)
                          if os.path.splitext(n)[1].lower() in dataset_index.IMAGE_EXTENSIONS]
        else:
            files.append(path)
    return files


def classify(model, threshold, paths, task, batch_size=32, max_pixels=imaging.DEFAULT_MAX_PIXELS, gradcam_dir=None):
    """`stream`'s results as a list."""
    return list(stream(model, threshold, paths, task, batch_size, max_pixels, gradcam_dir))


def stream(model, threshold, paths, task, batch_size=32, max_pixels=imaging.DEFAULT_MAX_PIXELS, gradcam_dir=None):
    """One result dict per file, in order: file, the task's answer (`task.result`), threshold; or
    file, error.

    A binary model answers `probability` and `label` (one of its classes); a multi-label model
    `probabilities` ({finding: probability}) and `findings` (those at or above their threshold).
    With `gradcam_dir`, `gradcam` is the overlay's path (a multi-label model: {finding: path} for
    each finding found, the map of that finding).  Files are read, decoded and scored
    `batch_size` at a time, so memory stays flat however many.
    """
    limits = task.output_thresholds(model.output_shape[-1], threshold)
    for start in range(0, len(paths), batch_size):
        yield from _classify_batch(model, task, limits, threshold, paths[start:start + batch_size], start,
                                   max_pixels, gradcam_dir)


def _classify_batch(model, task, limits, threshold, paths, offset, max_pixels, gradcam_dir):
    size, channels = model.input_shape[1], model.input_shape[3]
    results, ready = [], []
    for path in paths:
        try:
            data = imaging.read(path, max_pixels)
            gray = imaging.load_gray(data, size, max_pixels)
        except imaging.ImageError as err:
            results.append({"file": path, "error": str(err)})
            continue
        results.append({"file": path})
        ready.append((len(results) - 1, gray, data if gradcam_dir else None))  # bytes kept only for overlays
    if not ready:
        return results
    batch = np.stack([gray for _, gray, _ in ready])[..., None]
    if channels == 3:
        batch = np.repeat(batch, 3, axis=-1)
    probs = model.predict_on_batch(batch).reshape(len(ready), -1)
    found = probs >= np.array(limits)  # [B, outputs]
    # Grad-CAM maps of the outputs the task draws for some film of the batch, each computed once
    wanted = sorted({k for row in found for k, _ in task.gradcam_targets(row)}) if gradcam_dir else []
    maps = {k: gradcam.heatmaps(model, batch, k) for k in wanted}
    for k, ((index, _, data), prob) in enumerate(zip(ready, probs)):
        result = results[index]
        result.update(task.result(prob, found[k], threshold))
        if gradcam_dir:
            full = imaging.load_gray(data, 0, max_pixels)
            stem = os.path.join(gradcam_dir, os.path.splitext(os.path.basename(result["file"]))[0]
                                + f".{offset + index}")
            result["gradcam"] = task.gradcam_result(
                {name: gradcam.overlay(full, maps[j][k], ".".join(filter(None, (stem, name, "gradcam.png"))))
                 for j, name in task.gradcam_targets(found[k])})
    return results


def predict_dataset(dataset, predict_fn, keep_images=False):
    """(labels, probabilities, extras) over an evaluation dataset; every record once, in order.

    `extras` holds the metadata lists ("filename", "patient") when the dataset carries them, and
    the images ("images", one array) when `keep_images`.
    """
    labels, probs, extras = [], [], {}
    for element in dataset:
        images, batch_labels = element[0], element[1]
        labels.append(batch_labels.numpy())
        probs.append(predict_fn(images).numpy())
        if keep_images:
            extras.setdefault("images", []).append(images.numpy())
        for key, values in (element[2].items() if len(element) > 2 else ()):
            extras.setdefault(key, []).extend(value.decode() for value in values.numpy())
    if keep_images:
        extras["images"] = np.concatenate(extras["images"])
    return np.concatenate(labels), np.concatenate(probs), extras
