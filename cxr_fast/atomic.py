"""Writing outputs so that nothing half-written ever carries its final name, and nothing the
user owns is replaced.

Files go to a temporary name in the same folder and are renamed (atomic on POSIX); a folder
of outputs is built under a hidden staging name beside its destination and renamed into
place only when complete, so an interrupted run leaves the old output or none, never a mix.

The one rule for output folders (`check_output_dir`, used by every command that writes one):
an existing non-empty folder is replaced only with `--overwrite`, or, for the commands whose
output is refreshed as a matter of course (evaluate's report, train's `--export_dir`), when it
is that command's own earlier output (the `.cxr_fast-output` file it leaves names it); and
never, not even with `--overwrite`, when it is, or holds, one of the run's inputs (the images,
the label file, the record set, the model being evaluated or exported).
Staging folders of runs that died (killed, out of memory) are removed by the next run that
writes the same output.
"""
import contextlib
import errno
import json
import os
import re
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


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)  # a full disk, a quota, a size limit


def cannot_write(flag, path, reason):
    """The one-line error for an output that could not be written (a full disk, a quota)."""
    return InputError(f"{flag}={path}: cannot write ({reason}); nothing was written there: free space "
                      "or choose another folder")


MARKER = ".cxr_fast-output"  # in every output folder a command finished: the command's name


def _inside(path, folder):
    """Whether `path` is `folder` or lies below it (symbolic links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def made_by(path):
    """The command whose finished output `path` is (its marker), or None."""
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def check_output_dir(path, overwrite, flag="--output_dir", command=None, inputs=()):
    """Refuses an output folder that writing `path` would wrongly replace (the module's rule).

    `inputs`: (path, what) pairs the run reads; `path` may not be one of them or hold one.
    `command`: the writer's name; its own earlier output is replaced without --overwrite.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{flag}={path} exists and is not a folder")
    for kept, what in inputs:
        if kept and _inside(kept, path):
            raise InputError(f"{flag}={path} would replace {what} ({kept}); write to another folder "
                             "(--overwrite never removes a run's inputs)")
    if not os.path.isdir(path) or not os.listdir(path) or overwrite:
        return
    if command is None or made_by(path) != command:
        raise InputError(f"{flag}={path} exists and is not empty; pass --overwrite to replace it")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_STAGING = re.compile(r"\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-")


def _alive(pid):
    """Whether process `pid` exists (another user's counts: kill(0) is refused, not failed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_dead_staging(final_path):
    """Removes the staging folders beside `final_path` left by runs whose process is gone."""
    parent, name = os.path.split(os.path.abspath(final_path))
    for entry in os.listdir(parent) if os.path.isdir(parent) else ():
        match = _STAGING.match(entry)
        if match and match["name"] == name and not _alive(int(match["pid"])):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final_path, overwrite=False, flag="--output_dir", command=None, inputs=()):
    """Yields a fresh staging folder; on success it replaces `final_path` (marked as `command`'s
    output), on failure it is removed (a full disk then is `cannot_write`'s one line).
    `check_output_dir` decides first whether it may."""
    check_output_dir(final_path, overwrite, flag, command, inputs)
    final_path = os.path.abspath(final_path)
    parent = os.path.dirname(final_path)
    os.makedirs(parent, exist_ok=True)
    remove_dead_staging(final_path)
    prefix = f".{os.path.basename(final_path)}."
    staging = tempfile.mkdtemp(dir=parent, prefix=f"{prefix}partial-{os.getpid()}-")
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide outputs from other users
    try:
        yield staging
        if command:
            write_text(os.path.join(staging, MARKER), command + "\n")
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.errno in _NO_ROOM:
            raise cannot_write(flag, final_path, err.strerror) from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if os.path.isdir(final_path):
        old = tempfile.mkdtemp(dir=parent, prefix=f"{prefix}old-{os.getpid()}-")
        os.replace(final_path, os.path.join(old, "previous"))
    os.replace(staging, final_path)
    if old:
        shutil.rmtree(old, ignore_errors=True)
