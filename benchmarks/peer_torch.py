"""The peer a user would pick instead: PyTorch's DataLoader + torchvision transforms, in two forms.

    pip install -e ".[peer]"      # torch and torchvision (benchmarks only; never imported by cxr_fast)
    python -m benchmarks.end_to_end --data_root=chest_xray     # the peer's rows beside the reference's
    python -m benchmarks.peer_torch --data_root=chest_xray --work_dir=/tmp/peer --json=peer.json   # alone

Runs in its own process, without TensorFlow (benchmarks/epochs.py says why).

- full-size: `ImageFolder` over train/ (Pillow decodes every full-size JPEG, every epoch, as the
  reference does), `Resize(128)`, then the reference's augmentation;
- pre-resized: what a savvy PyTorch user does: every film written once as a 128 px JPEG (Pillow,
  quality 95, one process per core, timed as preparation), then the same pipeline minus the resize
  (every epoch costs the same: `STEADY_EPOCHS` measured).
Both: 1 channel (as cxr_fast), `RandomAffine` with the reference's ranges (rotation 30 degrees,
shifts 0.2, zoom 0.8-1.2, shear 0.2 degrees as ImageDataGenerator reads `shear_range`, bilinear),
`RandomHorizontalFlip`, batch 64, shuffled, `num_workers` = cores, persistent workers. What
differs from the reference: torchvision fills with a constant where ImageDataGenerator repeats
the nearest edge pixel (`fill_mode="nearest"`), and its zoom draws one scale for both axes.
"""
import multiprocessing
import os
import time

from absl import app, flags

from benchmarks.epochs import BATCH, SIZE, STEADY_EPOCHS, endless, print_and_save, python_stream


def _gray(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("L")


def loader(image_dir, resize, cores=None, seed=0):
    """A DataLoader of (images [B, 1, 128, 128] float, labels) over a NORMAL/PNEUMONIA folder."""
    import torch
    from torchvision import datasets, transforms

    steps = [transforms.Resize((SIZE, SIZE))] if resize else []
    steps += [transforms.RandomAffine(degrees=30, translate=(0.2, 0.2), scale=(0.8, 1.2), shear=0.2,
                                      interpolation=transforms.InterpolationMode.BILINEAR),
              transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    dataset = datasets.ImageFolder(image_dir, transform=transforms.Compose(steps), loader=_gray)
    workers = cores or os.cpu_count() or 1
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                       persistent_workers=True, generator=torch.Generator().manual_seed(seed))


def _resize_one(paths):
    from PIL import Image

    source, target = paths
    with Image.open(source) as image:
        image.convert("L").resize((SIZE, SIZE), Image.BILINEAR).save(target, quality=95)


def pre_resize(data_root, output_root, cores=None):
    """Writes every film under `data_root` as a 128 px JPEG under `output_root` (same tree); returns seconds."""
    start, jobs = time.perf_counter(), []
    for folder, _, names in os.walk(data_root):
        target = os.path.join(output_root, os.path.relpath(folder, data_root))
        os.makedirs(target, exist_ok=True)
        jobs += [(os.path.join(folder, n), os.path.join(target, n)) for n in names
                 if n.lower().endswith((".jpeg", ".jpg", ".png"))]
    with multiprocessing.get_context("spawn").Pool(cores or os.cpu_count()) as pool:
        pool.map(_resize_one, jobs, chunksize=32)
    return time.perf_counter() - start


def run(data_root, work_dir, epochs):
    """The two end-to-end rows: full-size (first epoch measured, x epochs) and pre-resized (preparation
    timed, `STEADY_EPOCHS` measured, x epochs)."""
    cores = os.cpu_count() or 1
    full = loader(os.path.join(data_root, "train"), resize=True)
    rows = [python_stream("PyTorch DataLoader + torchvision, full-size JPEG -> 128 px + augmentation",
                          endless(full), len(full.dataset), cores, epochs, 1)]
    resized_root = os.path.join(work_dir, "resized")
    preparation = pre_resize(data_root, resized_root)
    resized = loader(os.path.join(resized_root, "train"), resize=False)
    rows.append(python_stream("PyTorch DataLoader + torchvision, JPEGs pre-resized to 128 px + augmentation",
                              endless(resized), len(resized.dataset), cores, epochs, min(STEADY_EPOCHS, epochs),
                              preparation))
    return rows


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    rows = run(FLAGS.data_root, FLAGS.work_dir, FLAGS.epochs)
    print_and_save(rows, FLAGS.epochs, FLAGS.json)


if __name__ == "__main__":
    flags.DEFINE_string("data_root", None, "Kermany-layout folder: train/, val/, test/ of full-size films.")
    flags.DEFINE_string("work_dir", None, "Folder for the pre-resized copy (resized/).")
    flags.DEFINE_integer("epochs", 30, "Epochs (the reference trained 30).")
    flags.DEFINE_string("json", None, "Write the rows here as JSON.")
    flags.mark_flags_as_required(["data_root", "work_dir"])
    app.run(main)
