"""A record set's manifest and shard files, checked without TensorFlow.

`tools.make_tfrecords` writes `manifest.json` beside the shards; everything that reads a record
set opens it here first.  No TensorFlow import: the entry points check `--data_dir` and
`--batch_size` against the manifest in a fraction of a second, before TensorFlow loads, and the
reader (`cxr_fast.data.pipeline`) gets the shard paths from the same `RecordSet`.
"""
import dataclasses
import hashlib
import json
import os
import struct

from cxr_fast.errors import InputError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS_CSV = "splits.csv"


@dataclasses.dataclass(frozen=True)
class RecordSet:
    """A checked record set: its manifest and the shard paths of each split."""

    root: str
    manifest: dict
    files: dict  # split -> tuple of shard paths, in shard order
    records: dict  # shard path -> records in it

    @property
    def stored_size(self):
        image = self.manifest["image"]
        return image["height"], image["width"]

    @property
    def encoding(self):
        return self.manifest["image"]["encoding"]

    @property
    def findings(self):
        """A multi-label set's finding names (one sigmoid each); () for a binary set such as Kermany."""
        return tuple(self.manifest.get("findings") or ())

    @property
    def classes(self):
        """The class names in label order (Kermany: NORMAL, PNEUMONIA; RSNA: NO_PNEUMONIA, PNEUMONIA)."""
        return tuple(self.manifest["classes"])

    def describe(self):
        return f"record set {self.root}"

    def finding_counts(self, split):
        """[(positive, negative)] per finding of a multi-label set's split (ignored labels left out)."""
        counts = self.manifest["counts"][split]["findings"]
        return [(counts[name]["positive"], counts[name]["negative"]) for name in self.findings]

    def num_records(self, split):
        return self.manifest["counts"][split]["total"]

    def class_counts(self, split):
        """Records per class of a split, in label order (NORMAL, PNEUMONIA; multi-label: none, any finding)."""
        return [self.manifest["counts"][split][name] for name in self.classes]

    def check_split(self, split):
        """A split to score must have shards (a set written with a zero fraction has none)."""
        if split not in self.files:
            raise InputError(f"--data_dir={self.root} has no {split} split")
        return self

    def check_batch_size(self, global_batch_size):
        """A global batch larger than the training split would train on nothing."""
        if global_batch_size > self.num_records("train"):
            raise InputError(f"--batch_size={global_batch_size} is larger than the {self.num_records('train')} "
                             "training records; lower it")


def load_manifest(record_dir):
    """The manifest of a record set, with a clear error when it is missing or from another version."""
    path = os.path.join(record_dir, MANIFEST)
    if not os.path.isfile(path):
        raise InputError(f"{path} not found: --data_dir must be a folder written by `python -m tools.make_tfrecords`")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not readable JSON ({err}); write the record set again") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path} has format_version {manifest.get('format_version')}, this cxr_fast reads "
                         f"{FORMAT_VERSION}; write the record set again with this version")
    return manifest


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def count_records(path):
    """The records in a TFRecord file, from its framing alone (length, CRC, data, CRC per record)."""
    count, size = 0, os.path.getsize(path)
    with open(path, "rb") as f:
        while f.tell() < size:
            header = f.read(12)
            if len(header) < 12:
                return -1
            length = struct.unpack("<Q", header[:8])[0]
            if f.tell() + length + 4 > size:
                return -1  # cut short
            f.seek(length + 4, os.SEEK_CUR)
            count += 1
    return count


def _check_counts(path, manifest):
    """The manifest's split counts must be what its shards say they hold (a cheap check of an edit)."""
    shards = {}
    for shard in manifest["shards"]:
        if not (isinstance(shard["records"], int) and shard["records"] >= 0 and isinstance(shard["bytes"], int)):
            raise InputError(f"{path}: shard {shard['file']} has a bad record count or size; "
                             "write the record set again")
        shards[shard["split"]] = shards.get(shard["split"], 0) + shard["records"]
    for split, total in shards.items():
        counted = manifest["counts"][split]["total"]
        if counted != total:
            raise InputError(f"{path} says the {split} split holds {counted} records but its shards hold {total}; "
                             "the manifest was changed: write the record set again")


def open_record_set(data_dir, verify=False):
    """Loads the manifest and checks every shard it lists: present, complete, counted as the splits
    say, and with `verify` its sha256 and the records it really holds."""
    manifest = load_manifest(data_dir)
    try:
        _check_counts(os.path.join(data_dir, MANIFEST), manifest)
        return _open_checked(data_dir, manifest, verify)
    except (KeyError, TypeError) as err:
        raise InputError(f"{os.path.join(data_dir, MANIFEST)} lacks or garbles {err}; write the record set again") \
            from None


def _open_checked(data_dir, manifest, verify):
    if not manifest["image"].get("fixed_size"):
        raise InputError(f"{data_dir} holds full-resolution records of varying size; write the set again "
                         "with a fixed --image_size (e.g. 128 or 256) for training")
    files, records = {}, {}
    for shard in manifest["shards"]:
        path = os.path.join(os.path.abspath(data_dir), shard["file"])  # service workers read it too
        if not os.path.isfile(path):
            raise InputError(f"{path} is listed in manifest.json but missing; copy the whole record set again")
        if os.path.getsize(path) != shard["bytes"]:
            raise InputError(f"{path} has {os.path.getsize(path)} bytes, manifest.json says {shard['bytes']}: "
                             "the shard is truncated or was changed; copy or write the record set again")
        if verify and sha256_file(path) != shard["sha256"]:
            raise InputError(f"{path} does not match its sha256 in manifest.json; copy or write the record set again")
        if verify and (held := count_records(path)) != shard["records"]:
            raise InputError(f"{path} holds {held} records, manifest.json says {shard['records']}; "
                             "write the record set again")
        files.setdefault(shard["split"], []).append(path)
        records[path] = shard["records"]
    return RecordSet(data_dir, manifest, {split: tuple(paths) for split, paths in files.items()}, records)
