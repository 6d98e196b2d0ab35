"""Converting an image folder into a split, sharded, checksummed TFRecord set.

Two passes over the files, both spread over worker processes:
1. fingerprint: sha1 of every file and a header check (cheap), so duplicates, unreadable
   files and decompression bombs are out before the split is drawn;
2. prepare: decode, gray, resize, encode (the expensive part), in the split's record order.
The parent process writes the records in that fixed order, cutting a new shard when one
reaches `shard_size_mb` or its share of `min_shards` (equal record counts per shard), so the
output is byte-identical for any number of workers.

Workers (`cxr_fast.workers`) run `cxr_fast.data.imaging` (Pillow and numpy) and never import
TensorFlow; only the parent process writes records.
Everything is built in a staging folder renamed into place at the end (`cxr_fast.atomic`).
"""
import collections
import csv
import dataclasses
import io
import os
import random
import time

from absl import logging

import tensorflow as tf

from cxr_fast import atomic, __version__
from cxr_fast import workers as workers_lib
from cxr_fast.data import imaging, labelfiles, recordset, schema
from cxr_fast.data import index as dataset_index
from cxr_fast.data.index import CLASS_NAMES, SPLITS
from cxr_fast.errors import InputError
from cxr_fast.tasks import task as task_lib
from cxr_fast.tasks import vocabulary


def convert(config, log=logging.info):
    """Runs the conversion described by a ConvertConfig; returns the manifest dict."""
    config.validate()
    atomic.check_output_dir(config.output_dir, config.overwrite, inputs=config.inputs())
    started = time.time()
    labels = _find_images(config, log)
    workers = config.num_workers or os.cpu_count() or 1
    with workers_lib.pool(workers) as pool:
        images, skipped, duplicates = _fingerprint(labels, config, pool, log)
        assignment = _draw_split(images, config)
        order = _record_order(images, assignment, config.seed)
        with atomic.staged_dir(config.output_dir, config.overwrite, inputs=config.inputs()) as staging:
            written, shards, failures, rate = _write_shards(order, assignment, labels, config, pool, staging, log)
            skipped = sorted(skipped + failures, key=lambda s: s.path)
            manifest = _manifest(config, labels, written, assignment, shards, skipped, duplicates, workers, rate,
                                 started)
            _write_splits_csv(os.path.join(staging, recordset.SPLITS_CSV), written, assignment, labels.task)
            atomic.write_json(os.path.join(staging, recordset.MANIFEST), manifest)
    log(summary_table(manifest))
    return manifest


@dataclasses.dataclass(frozen=True)
class _Labels:
    """The candidate images and their task (`cxr_fast.tasks.task`: binary, or one label per finding)."""

    task: object
    source_findings: tuple  # a multi-label set's own names of its findings (the task's are aligned)
    images: list
    skipped: list


def _find_images(config, log):
    """The candidate images: NORMAL/PNEUMONIA folders, or the rows of a label file."""
    if config.labels:
        classes, images, skipped, findings = labelfiles.read(config)
        if not images:
            example = skipped[0].reason if skipped else "no rows"
            raise InputError(f"--labels={config.labels}: no row names an image found below --data_dir="
                             f"{config.data_dir} ({len(skipped)} skipped, e.g. {example})")
        log(f"{config.format} label file: {len(images)} images of {len({im.patient for im in images})} patients, "
            f"{len(skipped)} rows skipped")
        try:
            names = vocabulary.aligned(findings, f"--labels={config.labels}")
        except ValueError as err:
            raise InputError(str(err)) from None
        return _Labels(task_lib.create(names, classes), findings, images, skipped)
    images, skipped = dataset_index.scan(config.data_dir)
    if not images and not skipped:
        raise InputError(f"--data_dir={config.data_dir} holds no files")
    if not images:
        raise InputError(f"--data_dir={config.data_dir}: no image file below a folder named NORMAL or PNEUMONIA "
                         f"({len(skipped)} other files skipped); see the README for the expected layout")
    log(f"found {len(images)} candidate images, {len(skipped)} other files skipped")
    return _Labels(task_lib.create((), CLASS_NAMES), (), images, skipped)


class _Progress:
    """Logs `done/total, images/s, ETA` at most every few seconds."""

    def __init__(self, label, total, log, every=5.0):
        self.label, self.total, self.log, self.every = label, total, log, every
        self.start = self.last = time.time()
        self.done = 0

    def step(self):
        self.done += 1
        now = time.time()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            self.log(f"{self.label}: {self.done}/{self.total} ({rate:.0f} img/s, ETA {eta:.0f} s)")

    @property
    def rate(self):
        return self.done / max(time.time() - self.start, 1e-9)


def _in_order(pool, fn, tasks, paths, chunksize):
    """`pool.imap(fn, tasks)`; a worker that dies (the OOM killer, a signal) is one line naming the
    file the results had reached, not a wait forever."""
    try:
        yield from pool.imap(fn, tasks, chunksize=chunksize)
    except workers_lib.WorkerDied as err:
        raise InputError(f"a conversion worker died (killed, or out of memory?) while converting {paths[err.index]} "
                         "or a file after it; give the machine more memory or use fewer --num_workers") from None


def _fingerprint(labels, config, pool, log):
    """Pass 1: hashes and header checks; returns (unique readable images, skipped, duplicates)."""
    images, skipped = labels.images, labels.skipped
    paths = [os.path.join(config.data_dir, im.path) for im in images]
    progress = _Progress("checking", len(paths), log)
    sha1s, readable = {}, []
    tasks = ((p, config.max_image_pixels) for p in paths)
    for image, (sha1, reason) in zip(images, _in_order(pool, imaging.fingerprint, tasks, paths, 32)):
        progress.step()
        if reason:
            skipped.append(dataset_index.Skipped(image.path, reason))
        else:
            sha1s[image.path] = sha1
            readable.append(image)
    kept, duplicates, conflicts = dataset_index.dedupe(readable, sha1s)
    if duplicates:
        log(f"removed {len(duplicates)} exact duplicates (same sha1)")
    for label, name in labels.task.required_labels():
        if not any(im.label == label for im in kept):
            if config.labels:
                raise InputError(f"--labels={config.labels}: no readable {name} image found; a binary set needs "
                                 "images of both classes")
            raise InputError(f"--data_dir={config.data_dir}: no readable {name} image found; "
                             f"both NORMAL and PNEUMONIA folders need images")
    if not kept:
        raise InputError(f"--labels={config.labels}: no readable image (see the skipped reasons)")
    kept = [(im, sha1s[im.path]) for im in kept]  # (ImageFile, sha1) travel together from here on
    return kept, skipped + conflicts, duplicates


def _draw_split(images, config):
    files = [im for im, _ in images]
    if config.split == "official":
        found = {im.official_split for im in files}
        if "test" not in found or not found & {"train", "val"}:
            raise InputError(f"--split=official needs images below both a train and a test folder in "
                             f"--data_dir={config.data_dir}; use --split=patient for other layouts")
    assignment = dataset_index.split(files, config.split, config.split_fractions, config.seed)
    for split, fraction in zip(SPLITS, config.split_fractions):
        if (fraction > 0 or config.split == "official") and split not in assignment.values():
            raise InputError(f"split {split!r} received no image: the data set in --data_dir={config.data_dir} "
                             f"is too small for --split_fractions={','.join(map(str, config.split_fractions))}")
    return assignment


def _record_order(images, assignment, seed):
    """Records of each split in a seeded random order, so every shard mixes classes and patients."""
    order = []
    for split in SPLITS:
        members = sorted((pair for pair in images if assignment.get(pair[0].path) == split), key=lambda p: p[0].path)
        random.Random(f"{seed}/records/{split}").shuffle(members)
        order += members
    return order


def _write_shards(order, assignment, labels, config, pool, staging, log):
    """Pass 2: decode and encode in workers, write shards here; returns what was written."""
    tasks = ((os.path.join(config.data_dir, im.path), config.image_size, config.encoding,
              config.jpeg_quality, config.max_image_pixels) for im, _ in order)
    progress = _Progress("converting", len(order), log)
    written, failures = [], []
    shards = _Shards(staging, collections.Counter(assignment[image.path] for image, _ in order), config)
    paths = [os.path.join(config.data_dir, im.path) for im, _ in order]
    try:
        for (image, sha1), result in zip(order, _in_order(pool, imaging.prepare, tasks, paths, 8)):
            progress.step()
            if isinstance(result, str):
                failures.append(dataset_index.Skipped(image.path, result))
                continue
            encoded, height, width = result
            shards.write(assignment[image.path], schema.make_example(
                encoded=encoded, encoding=config.encoding, height=height, width=width, label=image.label,
                class_text=labels.task.class_text(image), filename=image.path, patient=image.patient, sha1=sha1,
                findings=image.findings))
            written.append((image, sha1))
        shards.close()
    except tf.errors.OpError as err:  # the record writer's own error: a full disk, a quota
        raise atomic.cannot_write("--output_dir", config.output_dir, err.message.rpartition("; ")[2]) from None
    return written, _finish_shards(shards.by_split, staging), failures, progress.rate


class _Shards:
    """Records in, shards out: a new shard when the split changes, the current one reaches
    `shard_size_mb`, or it holds its share of `min_shards` (equal record counts per shard)."""

    def __init__(self, staging, per_split, config):
        self.staging, self.limit = staging, config.shard_size_mb * 1e6
        self.cap = {split: -(-count // config.min_shards) for split, count in per_split.items()}
        self.by_split = collections.defaultdict(list)  # split -> [[split, records, bytes, tmp path], ...]
        self.writer, self.current = None, None

    def write(self, split, record):
        current = self.current
        if (current is None or current[0] != split or current[1] >= self.cap[split]
                or (current[1] and current[2] + len(record) > self.limit)):
            self.close()
            self.current = current = [split, 0, 0, os.path.join(self.staging,
                                                                f".{split}-{len(self.by_split[split]):05d}.tmp")]
            self.by_split[split].append(current)
            self.writer = tf.io.TFRecordWriter(current[3])
        self.writer.write(record)
        current[1] += 1
        current[2] += len(record) + 16  # 16 bytes of length and CRC framing per record

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None


def _finish_shards(shards, staging):
    """Renames each complete shard to its final `-of-N` name and checksums it."""
    entries = []
    for split in SPLITS:
        count = len(shards[split])
        for index, (_, records, _, tmp_path) in enumerate(shards[split]):
            name = schema.shard_name(split, index, count)
            final = os.path.join(staging, name)
            os.replace(tmp_path, final)
            entries.append({"file": name, "split": split, "records": records,
                            "bytes": os.path.getsize(final), "sha256": recordset.sha256_file(final)})
    return entries


def _manifest(config, labels, written, assignment, shards, skipped, duplicates, workers, rate, started):
    task = labels.task
    by_split = {s: [image for image, _ in written if assignment[image.path] == s] for s in SPLITS}
    counts = {}
    for split, images in by_split.items():
        counts[split] = {name: sum(im.label == label for im in images) for label, name in enumerate(task.classes)}
        counts[split].update(total=len(images), patients=len({im.patient for im in images}),
                             **task.label_counts(images))
    files = [image for image, _ in written]
    leaked = dataset_index.patients_in_several_splits(files, assignment)
    reasons = collections.Counter(s.reason.split(":")[0] for s in skipped)
    source = {"source": "folders"} if not config.labels else {
        "source": "label_file", "labels": os.path.abspath(config.labels), "format": config.format,
        "uncertain": config.uncertain, "views": list(config.views), "path_column": config.path_column,
        "patient_column": config.patient_column, "label_columns": list(config.label_columns)}
    return {
        "format_version": recordset.FORMAT_VERSION,
        "created_by": f"cxr_fast {__version__} tools.make_tfrecords",
        "settings": {
            "data_dir": os.path.abspath(config.data_dir), "split": config.split,
            "split_fractions": list(config.split_fractions), "seed": config.seed,
            "image_size": config.image_size, "encoding": config.encoding, "jpeg_quality": config.jpeg_quality,
            "shard_size_mb": config.shard_size_mb,
            "min_shards": config.min_shards, "max_image_pixels": config.max_image_pixels, **source,
        },
        **task.manifest_fields(),
        "source_findings": list(labels.source_findings),
        "image": {"height": config.image_size or None, "width": config.image_size or None, "channels": 1,
                  "encoding": config.encoding, "fixed_size": bool(config.image_size)},
        "counts": counts,
        "images_written": len(written),
        "patients": {
            "total": len({im.patient for im in files}),
            "unparsed_names": sum(im.patient.startswith(dataset_index.UNPARSED_PREFIX) for im in files),
            "in_several_splits": len(leaked),
            "in_several_splits_list": leaked,
        },
        "duplicates_removed": len(duplicates),
        "duplicates": [{"file": dropped, "same_as": kept} for dropped, kept in duplicates],
        "skipped_count": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped": [{"file": s.path, "reason": s.reason} for s in skipped],
        "shards": shards,
        "timing": {"seconds": round(time.time() - started, 2), "convert_images_per_second": round(rate, 1),
                   "workers": workers},
    }


def _write_splits_csv(path, written, assignment, task):
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(["file", "patient", "label", "split", "sha1"] + task.splits_columns())
    for image, sha1 in sorted(written, key=lambda pair: pair[0].path):
        out.writerow([image.path, image.patient, image.label, assignment[image.path], sha1]
                     + task.splits_columns(image))
    atomic.write_text(path, buffer.getvalue())


def summary_table(manifest):
    """A plain-text table of what was written, per split and class."""
    classes = manifest["classes"]
    rows = [("split", *classes, "total", "patients", "shards", "MB")]
    for split in SPLITS:
        c = manifest["counts"][split]
        split_shards = [s for s in manifest["shards"] if s["split"] == split]
        megabytes = sum(s["bytes"] for s in split_shards) / 1e6
        rows.append((split, *(c[n] for n in classes), c["total"], c["patients"], len(split_shards),
                     f"{megabytes:.1f}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows]
    p = manifest["patients"]
    lines.append(f"written {manifest['images_written']}, duplicates removed {manifest['duplicates_removed']}, "
                 f"skipped {manifest['skipped_count']} {manifest['skipped_by_reason']}, "
                 f"patients {p['total']} ({p['unparsed_names']} from unparsed names, "
                 f"{p['in_several_splits']} in several splits), "
                 f"{manifest['timing']['convert_images_per_second']} img/s on {manifest['timing']['workers']} workers")
    return "\n".join(lines)
