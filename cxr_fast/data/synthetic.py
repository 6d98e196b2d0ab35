"""The embedded synthetic chest film data set, for machines that cannot download Kermany.

Writes the Kermany layout (`chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/`) and file names
(`IM-P-N`, `NORMAL2-IM-P-N-1`, `personP_bacteria_N`, `personP_virus_N`) with patients that
have several films, as grayscale JPEGs of realistic size, so every stage of cxr_fast runs on
it exactly as on the real set.

A film is drawn at low resolution (body, two lung fields, heart, spine, ribs, clavicles,
soft low-frequency noise), upsampled to its full size and given film grain.  A patient's
anatomy is fixed and each of their films jitters it (position, scale, exposure), so patient
leakage between splits is as real here as in Kermany.  `position_shift` and `position_rotation`
place films off centre and askew (for test sets of unevenly positioned patients).  PNEUMONIA films carry patchy
opacities in the lung fields, whose contrast falls as `difficulty` rises; NORMAL films carry
faint vessel-like blobs of the same shape so the sign is not trivially "any blob".
"""
import dataclasses
import io
import os
import shutil
import time

import numpy as np
from PIL import Image

from cxr_fast import atomic
from cxr_fast import workers as workers_lib

_GRID = 192  # long side of the low-resolution drawing


@dataclasses.dataclass(frozen=True)
class FilmTask:
    """Everything a worker needs to draw and write one film."""

    path: str
    seed: int
    anatomy_seed: int
    pneumonia: bool
    width: int
    height: int
    difficulty: float
    position_shift: float = 0.0
    position_rotation: float = 0.0


def plan(config):
    """The deterministic list of FilmTasks (paths relative to the output folder) for a config."""
    rng = np.random.default_rng([config.seed, 1])
    tasks, counters = [], {"IM": 0, "NORMAL2": 0, "person": 0, "image": 0}
    for _ in range(config.num_patients):
        pneumonia = rng.random() < 0.6
        if pneumonia:  # about half of Kermany's pneumonia films belong to patients with 2-30 films
            films = int(min(rng.geometric(0.55) + (rng.random() < 0.08) * rng.integers(3, 15), 30))
        else:
            films = 1 + int(rng.random() < 0.2) * int(rng.integers(1, 3))
        anatomy_seed = int(rng.integers(2**31))
        folder = rng.choice(["train", "test", "val"], p=[0.82, 0.15, 0.03])
        width = int(rng.integers(config.min_size, config.max_size + 1))
        aspect = rng.uniform(0.72, 1.0)
        kind = "bacteria" if rng.random() < 0.65 else "virus"
        normal2 = rng.random() < 0.3
        counters["person" if pneumonia else "NORMAL2" if normal2 else "IM"] += 1
        pid = counters["person" if pneumonia else "NORMAL2" if normal2 else "IM"]
        for n in range(films):
            counters["image"] += 1
            if pneumonia:
                name = f"person{pid}_{kind}_{counters['image']}.jpeg"
            elif normal2:
                name = f"NORMAL2-IM-{pid:04d}-{n + 1:04d}-0001.jpeg"
            else:
                name = f"IM-{pid:04d}-{n + 1:04d}.jpeg"
            label = "PNEUMONIA" if pneumonia else "NORMAL"
            jitter = rng.uniform(0.94, 1.06)
            tasks.append(FilmTask(
                path=f"chest_xray/{folder}/{label}/{name}", seed=int(rng.integers(2**31)),
                anatomy_seed=anatomy_seed, pneumonia=bool(pneumonia),
                width=int(width * jitter), height=int(width * aspect * jitter), difficulty=config.difficulty,
                position_shift=config.position_shift, position_rotation=config.position_rotation))
    return tasks


def _ellipse(x, y, cx, cy, rx, ry, softness):
    """Soft ellipse mask in [0, 1]."""
    distance = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp((distance - 1.0) / softness))


def _blobs(rng, x, y, count, centers, radius_range):
    field = np.zeros_like(x)
    for _ in range(count):
        cx, cy = centers[rng.integers(len(centers))]
        cx += rng.normal(0, 0.1)
        cy += rng.normal(0, 0.2)
        r = rng.uniform(*radius_range)
        field += rng.uniform(0.5, 1.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return field


def draw(task):
    """A FilmTask -> uint8 [height, width] film."""
    anatomy = np.random.default_rng(task.anatomy_seed)  # the patient's own body, shared by their films
    rng = np.random.default_rng(task.seed)
    scale = _GRID / max(task.width, task.height)
    gh, gw = max(int(task.height * scale), 16), max(int(task.width * scale), 16)
    y, x = np.mgrid[-1:1:gh * 1j, -1:1:gw * 1j].astype(np.float32)
    if task.position_shift or task.position_rotation:  # its own stream: the default films stay as they were
        pose = np.random.default_rng([task.seed, 2])
        angle = np.radians(pose.uniform(-task.position_rotation, task.position_rotation))
        dx, dy = 2 * pose.uniform(-task.position_shift, task.position_shift, 2)  # the grid spans [-1, 1]
        x, y = np.cos(angle) * x + np.sin(angle) * y - dx, -np.sin(angle) * x + np.cos(angle) * y - dy
    x = (x - rng.normal(0, 0.03)) / rng.uniform(0.95, 1.05)
    y = y - rng.normal(0, 0.03)
    body_w, lung_w, lung_h = anatomy.uniform(0.78, 0.92), anatomy.uniform(0.2, 0.28), anatomy.uniform(0.45, 0.6)
    body = _ellipse(x, y, 0, 0.15, body_w, 1.15, 0.04)
    lungs = sum(_ellipse(x, y, side * anatomy.uniform(0.3, 0.38), -0.05, lung_w, lung_h, 0.08) for side in (-1, 1))
    heart = _ellipse(x, y, 0.14, 0.22, anatomy.uniform(0.22, 0.3), 0.22, 0.1)
    spine = np.exp(-(x / 0.07) ** 2) * (y > -0.9)
    spacing = anatomy.uniform(0.13, 0.17)
    ribs = (np.sin(2 * np.pi * (y - 0.35 * x**2) / spacing) > 0.55) * lungs
    clavicles = np.exp(-((y + 0.62 - 0.15 * np.abs(x)) / 0.03) ** 2) * (np.abs(x) < 0.6)
    film = 0.06 + 0.5 * body - 0.28 * lungs + 0.18 * heart + 0.25 * spine * body + 0.08 * ribs + 0.2 * clavicles
    lung_centers = [(-0.33, 0.1), (0.33, 0.1), (-0.3, -0.2), (0.3, -0.2)]
    film += 0.05 * _blobs(rng, x, y, 4, lung_centers, (0.02, 0.04)) * lungs  # vessels, in every film
    if task.pneumonia:
        patches = _blobs(rng, x, y, int(rng.integers(2, 6)), lung_centers, (0.06, 0.14))
        patches *= 0.6 + 0.4 * rng.random(patches.shape).astype(np.float32)  # patchy, not smooth
        film += (0.04 + 0.3 * (1 - task.difficulty)) * patches * lungs
    film = film * rng.uniform(0.85, 1.15) + rng.normal(0, 0.01, film.shape)
    low = np.clip(film * 255, 0, 255).astype(np.uint8)
    full = np.asarray(Image.fromarray(low).resize((task.width, task.height), Image.Resampling.BILINEAR),
                      dtype=np.float32)
    full += rng.standard_normal(full.shape, dtype=np.float32) * 4.0  # film grain
    return np.clip(full, 0, 255).astype(np.uint8)


def write_film(job):
    """Worker: (FilmTask, output folder) -> bytes written."""
    task, root = job
    buffer = io.BytesIO()
    Image.fromarray(draw(task)).save(buffer, format="JPEG", quality=90)
    path = os.path.join(root, task.path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return len(buffer.getvalue())


def _add_kaggle_quirks(root):
    """The Kaggle zip's extras: a nested duplicate of the whole set and macOS metadata files."""
    source = os.path.join(root, "chest_xray")
    shutil.copytree(source, os.path.join(source, "chest_xray"))
    for folder, _, files in os.walk(source):
        for name in files[:3]:
            rel = os.path.relpath(os.path.join(folder, "._" + name), root)
            junk = os.path.join(root, "__MACOSX", rel)
            os.makedirs(os.path.dirname(junk), exist_ok=True)
            with open(junk, "wb") as f:
                f.write(b"\x00\x05\x16\x07" + bytes(60))
    with open(os.path.join(source, ".DS_Store"), "wb") as f:
        f.write(bytes(16))


def generate(config, log=print):
    """Writes the synthetic set described by a SyntheticConfig; returns a summary dict."""
    config.validate()
    started = time.time()
    tasks = plan(config)
    with atomic.staged_dir(config.output_dir, config.overwrite) as staging:
        with workers_lib.pool(config.num_workers) as pool:
            total = sum(pool.imap(write_film, ((t, staging) for t in tasks), chunksize=4))
        if config.kaggle_quirks:
            _add_kaggle_quirks(staging)
        summary = {
            "generator": "cxr_fast.data.synthetic", "settings": dataclasses.asdict(config),
            "patients": config.num_patients, "images": len(tasks),
            "pneumonia_images": sum(t.pneumonia for t in tasks),
            "normal_images": sum(not t.pneumonia for t in tasks),
            "megabytes": round(total / 1e6, 1), "seconds": round(time.time() - started, 1),
        }
        atomic.write_json(os.path.join(staging, "synthetic.json"), summary)
    log(f"wrote {summary['images']} films of {config.num_patients} patients "
        f"({summary['normal_images']} NORMAL, {summary['pneumonia_images']} PNEUMONIA, {summary['megabytes']} MB) "
        f"to {config.output_dir} in {summary['seconds']} s")
    return summary
