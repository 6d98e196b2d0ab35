"""Time to a trained model, input side: one-time preparation + 30 epochs of the augmented stream.

    python -m benchmarks.end_to_end --data_root=chest_xray --json=end_to_end.json

`--data_root` is a Kermany-layout folder (train/, val/, test/, each with NORMAL/ and PNEUMONIA/
of full-size films). An epoch is one pass over train/, as the reference trains: every film
decoded, resized to 128 px and augmented with the reference's affine settings, in batches of 64.

- reference: tf_keras ImageDataGenerator.flow_from_directory on train/ (1 core, its design);
  no preparation. Its first epoch is measured; 30 epochs are that epoch's time x 30
  (`extrapolated` in the result): every epoch repeats the same decode, nothing is cached.
- cxr_fast, augmentation on the CPU (the like-for-like form: the same work per image, on this
  machine's cores): preparation = `tools.make_tfrecords --split=official` of the whole folder
  (val and test too, as a user converts it), then the trainer's pipeline (cache auto: epoch 1
  decodes the 128 px records, later epochs read the cache) + the fused augmentation, all 30
  epochs measured. Each epoch delivers as many images as train/ holds (the official split
  carves val out of train/ by patient, so the training records are fewer: the stream repeats
  them within the epoch, so both sides decode and augment the same number of images).
- cxr_fast, augmentation on the accelerator: the same preparation and stream without the
  augmentation, which the trainer runs inside its step on the GPU; what remains on the host.
- the peers, each in its own process, when installed (`PEERS`): PyTorch DataLoader +
  torchvision (benchmarks/peer_torch.py: full-size, first epoch measured x 30; pre-resized once to
  128 px JPEGs, preparation timed, all 30 epochs measured), MONAI (peer_monai.py: full-size;
  CacheDataset of the loaded and resized films) and NVIDIA DALI on the CPU (peer_dali.py:
  full-size; cxr_fast's 128 px records); a peer that fails here is a row "not measured: <error>".
  A stream whose every epoch costs the same is measured on fewer epochs and multiplied, said in
  the table as "extrapolated from N".

cxr_fast's streams are consumed in a tf.function, one epoch of batches per call, as the trainer
consumes them (`common.batch_puller`).
"""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import common, input_pipeline
from benchmarks.epochs import BATCH, SIZE, python_stream
from cxr_fast import config as config_lib
from cxr_fast.data import pipeline, recordset, writer

EPOCHS = 30


def reference(data_root, epochs=EPOCHS, measured_epochs=1):
    batches = input_pipeline.reference_batches(os.path.join(data_root, "train"))
    return python_stream("reference ImageDataGenerator, full-size JPEG -> 128 px + augmentation", iter(batches),
                         batches.samples, 1, epochs, measured_epochs)


PEERS = (  # (module, the package it needs, the extra that installs it)
    ("benchmarks.peer_torch", "torchvision", "peer"),
    ("benchmarks.peer_monai", "monai", "peer"),
    ("benchmarks.peer_dali", "nvidia.dali", "peer-dali"),
)


def installed(package):
    """Whether `package` (dotted names too: nvidia.dali, whose `nvidia` torch's CUDA wheels also hold) imports."""
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:
        return False


def peer_rows(module, package, extra, args, work_dir, log=print):
    """A peer's rows, from its own process (no TensorFlow there); [] with a note when its package is
    missing, and one row "not measured: <the error>" when it fails to run here."""
    name = module.rsplit("_", 1)[-1]
    if not installed(package):
        log(f"{name} peer skipped: {package} not installed (pip install -e \".[{extra}]\")")
        return []
    output = os.path.join(work_dir, f"{name}.json")
    result = subprocess.run([sys.executable, "-m", module, f"--json={output}", *args], capture_output=True, text=True)
    if result.returncode:
        error = _error(result.stderr, result.returncode)
        log(f"{name} peer not measured: {error}")
        return [{"name": f"{name}: not measured: {error}", "not_measured": error}]
    with open(output) as f:
        return json.load(f)


def _error(stderr, code):
    """A failed peer's reason: its exception's line, else its last lines (absl's flag errors)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return raised[-1] if raised else " ".join(lines[-3:]) or f"exit code {code}"


def prepare(data_root, output_dir, image_size=SIZE):
    """`tools.make_tfrecords --split=official` of the whole folder; returns (record set, seconds)."""
    start = time.perf_counter()
    writer.convert(config_lib.ConvertConfig(data_dir=data_root, output_dir=output_dir, split="official",
                                            image_size=image_size, overwrite=True), log=lambda *_: None)
    return recordset.open_record_set(output_dir), time.perf_counter() - start


def cxr_fast_stream(record_set, augment, epoch_images, epochs=EPOCHS):
    """All `epochs` epochs of `epoch_images` images each from the trainer's training stream, measured."""
    config = config_lib.DataConfig(data_dir=record_set.root, image_size=SIZE, global_batch_size=BATCH)
    steps = math.ceil(epoch_images / config.global_batch_size)
    dataset = pipeline.train_dataset(record_set, config, epochs=epochs, steps_per_epoch=steps)
    if augment:
        dataset = input_pipeline.with_augmentation(dataset)
    pull_epoch = common.batch_puller(dataset, steps)  # one call per epoch: exactly the 30 epochs, no more
    start = time.perf_counter()
    for _ in range(epochs):
        pull_epoch().numpy()
    return time.perf_counter() - start


def run(data_root, epochs=EPOCHS, work_dir=None, log=print):
    variants = [reference(data_root, epochs)]
    log(f"{variants[0]['name']}: {variants[0]['stream_s']:,.0f} s for {epochs} epochs (extrapolated from 1)")
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="cxr_fast_e2e_") as tmp:
        record_set, preparation = prepare(data_root, os.path.join(tmp, "records"))
        films = variants[0]["epoch_images"]
        for augment, where in ((True, "augmentation on the CPU"), (False, "augmentation on the accelerator")):
            seconds = cxr_fast_stream(record_set, augment, films, epochs)
            variants.append({"name": f"cxr_fast, {where}", "cores": os.cpu_count() or 1,
                             "preparation_s": preparation, "epoch_images": films, "measured_epochs": epochs,
                             "stream_s": seconds, "extrapolated": False})
            log(f"cxr_fast, {where}: {preparation:,.0f} s conversion + {seconds:,.0f} s for {epochs} epochs")
        common_args = [f"--data_root={data_root}", f"--epochs={epochs}"]
        peer_args = {"benchmarks.peer_torch": [f"--work_dir={tmp}"],
                     "benchmarks.peer_dali": [f"--records={record_set.root}", f"--work_dir={tmp}",
                                              f"--preparation_s={preparation}"]}
        for module, package, extra in PEERS:
            variants += peer_rows(module, package, extra, common_args + peer_args.get(module, []), tmp, log)
    measured = [v for v in variants if "not_measured" not in v]
    for v in measured:
        v["total_s"] = v["preparation_s"] + v["stream_s"]
        v["img_per_s"] = v["epoch_images"] * epochs / v["stream_s"]
        v["speedup_over_reference"] = variants[0]["total_s"] / v["total_s"]
    return measured + [v for v in variants if "not_measured" in v]


def _seconds(value):
    return f"{value:,.1f} s" if value < 10 else f"{value:,.0f} s"


def markdown(variants, epochs=EPOCHS):
    lines = [f"| input side of {epochs} epochs | cores | preparation (once) | {epochs} epochs | stream img/s | total | "
             "x faster |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        if "not_measured" in v:
            lines.append(f"| {v['name']} | | | | | | |")
            continue
        note = f" (extrapolated from {v['measured_epochs']})" if v["extrapolated"] else ""
        lines.append(f"| {v['name']} | {v['cores']} | {_seconds(v['preparation_s'])} | {_seconds(v['stream_s'])}{note} | "
                     f"{v['img_per_s']:,.0f} | {v['total_s'] / 60:,.1f} min | {v['speedup_over_reference']:,.1f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    variants = run(flags.FLAGS.data_root, flags.FLAGS.epochs)
    print(markdown(variants, flags.FLAGS.epochs))
    common.write_json(flags.FLAGS.json, {"benchmark": "end_to_end", "machine": common.machine(),
                                         "epochs": flags.FLAGS.epochs, "variants": variants})


if __name__ == "__main__":
    flags.DEFINE_string("data_root", None, "Kermany-layout folder: train/, val/, test/ of full-size films.")
    flags.DEFINE_integer("epochs", EPOCHS, "Epochs (the reference trained 30).")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    flags.mark_flags_as_required(["data_root"])
    app.run(main)
