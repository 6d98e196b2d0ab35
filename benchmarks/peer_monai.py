"""The peer a medical-imaging user would pick instead: MONAI's dictionary transforms and its cache.

    pip install -e ".[peer]"      # torch, torchvision and monai (benchmarks only; never imported by cxr_fast)
    python -m benchmarks.peer_monai --data_root=chest_xray --json=monai.json   # alone; end_to_end runs it too

Runs in its own process, without TensorFlow (benchmarks/epochs.py says why). MONAI's idiomatic
pipeline for 2-D films, on train/'s full-size JPEGs:
- full-size: `Dataset` with `LoadImaged` (Pillow) + `EnsureChannelFirstd` + `Resized` to 128 px,
  then the reference's augmentation, every epoch (as the reference decodes every epoch);
- cached: the same, `CacheDataset` holding the loaded and resized films (its deterministic
  prefix, built once with one thread per core and timed as preparation), the augmentation per
  epoch.
Both: `RandAffined` with the reference's ranges (rotation 30 degrees, shifts 0.2, zoom 0.8-1.2
per axis, shear 0.2 degrees as ImageDataGenerator reads `shear_range`, bilinear, border
padding = ImageDataGenerator's `fill_mode="nearest"`), `RandFlipd`, batch 64, shuffled, a
torch `DataLoader` with `num_workers` = cores. What differs from cxr_fast: MONAI resamples on
the CPU in its workers (cxr_fast's trainer does it on the accelerator), and MONAI's zoom draws
from a uniform range per axis, as ImageDataGenerator does.
"""
import math
import os
import sys
import time

from absl import app, flags

from benchmarks.epochs import BATCH, SIZE, STEADY_EPOCHS, endless, print_and_save, python_stream

# MONAI imports TensorFlow when it finds it (for TensorBoard); DataLoader workers forked from a
# process holding TensorFlow's threads hung here. This process needs none: make the import fail.
sys.modules.setdefault("tensorflow", None)



def films(image_dir):
    """[{"image": path, "label": 0 or 1}] of a NORMAL/PNEUMONIA folder, sorted."""
    items = []
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        folder = os.path.join(image_dir, name)
        items += [{"image": os.path.join(folder, n), "label": label} for n in sorted(os.listdir(folder))
                  if n.lower().endswith((".jpeg", ".jpg", ".png"))]
    return items


def transforms():
    """(the deterministic load-and-resize steps, the reference's augmentation) as MONAI transforms."""
    from monai import transforms as mt

    load = [mt.LoadImaged(keys="image", reader="PILReader", image_only=True),
            mt.EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
            mt.Resized(keys="image", spatial_size=(SIZE, SIZE), mode="bilinear")]
    shear = math.tan(math.radians(0.2))
    augment = [mt.RandAffined(keys="image", prob=1.0, rotate_range=math.radians(30), shear_range=(shear, shear),
                              translate_range=(0.2 * SIZE, 0.2 * SIZE), scale_range=(0.2, 0.2), mode="bilinear",
                              padding_mode="border"),
               mt.RandFlipd(keys="image", prob=0.5, spatial_axis=1),
               mt.EnsureTyped(keys="image", track_meta=False)]
    return load, augment


def loader(dataset, cores, seed=0):
    import torch
    from monai.data import DataLoader

    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=cores, persistent_workers=True,
                      generator=torch.Generator().manual_seed(seed))


def _pairs(batches):
    for batch in batches:
        yield batch["image"], batch["label"]


def run(data_root, epochs):
    """The two end-to-end rows: full-size (first epoch measured, x epochs) and cached (preparation
    timed, `STEADY_EPOCHS` epochs measured, x epochs)."""
    from monai.data import CacheDataset, Dataset
    from monai.transforms import Compose

    cores = os.cpu_count() or 1
    items, (load, augment) = films(os.path.join(data_root, "train")), transforms()
    full = loader(Dataset(items, Compose(load + augment)), cores)
    rows = [python_stream("MONAI Dataset + RandAffined, full-size JPEG -> 128 px + augmentation",
                          _pairs(endless(full)), len(items), cores, epochs, 1)]
    start = time.perf_counter()
    cached = CacheDataset(items, Compose(load + augment), num_workers=cores, progress=False)
    preparation = time.perf_counter() - start
    rows.append(python_stream("MONAI CacheDataset (films loaded and resized once) + RandAffined",
                              _pairs(endless(loader(cached, cores))), len(items), cores, epochs,
                              min(STEADY_EPOCHS, epochs), preparation))
    return rows


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    rows = run(FLAGS.data_root, FLAGS.epochs)
    print_and_save(rows, FLAGS.epochs, FLAGS.json)


if __name__ == "__main__":
    flags.DEFINE_string("data_root", None, "Kermany-layout folder: train/, val/, test/ of full-size films.")
    flags.DEFINE_integer("epochs", 30, "Epochs (the reference trained 30).")
    flags.DEFINE_string("json", None, "Write the rows here as JSON.")
    flags.mark_flags_as_required(["data_root"])
    app.run(main)
