"""Writing outputs so that nothing half-written ever carries its final name.

Files go to a temporary name in the same folder and are renamed (atomic on POSIX); a folder
of outputs is built under a hidden staging name beside its destination and renamed into
place only when complete, so an interrupted run leaves the old output or none, never a mix.
"""
import contextlib
import json
import os
import shutil
import tempfile

from cxr_fast.errors import InputError


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path beside `path`; renames it to `path` on success, removes it on failure.

    The temporary name keeps the full suffix (`.weights.h5`, `.keras`) for writers that check it,
    and is fixed, so a file left by a killed run is overwritten by the next one.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, dot, suffix = name.partition(".")
    temporary = os.path.join(folder, f".{stem}.partial{dot}{suffix}")
    if os.path.exists(temporary):
        os.remove(temporary)
    try:
        yield temporary
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    if os.path.exists(temporary):
        os.replace(temporary, path)


def write_bytes(path, data):
    """Writes `data` to `path` through a temporary file in the same folder and a rename."""
    with replacing(path) as temporary, open(temporary, "wb") as f:
        f.write(data)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_output_dir(path, overwrite, flag="--output_dir"):
    """Refuses an existing non-empty output folder unless the user asked to overwrite it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{flag}={path} exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise InputError(f"{flag}={path} exists and is not empty; pass --overwrite to replace it")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_dir(final_path, overwrite=False, flag="--output_dir"):
    """Yields a fresh staging folder; on success it replaces `final_path`, on failure it is removed."""
    check_output_dir(final_path, overwrite, flag)
    final_path = os.path.abspath(final_path)
    parent = os.path.dirname(final_path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(final_path) + ".partial-")
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide outputs from other users
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if os.path.isdir(final_path):
        old = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(final_path) + ".old-")
        os.replace(final_path, os.path.join(old, "previous"))
    os.replace(staging, final_path)
    if old:
        shutil.rmtree(old, ignore_errors=True)
