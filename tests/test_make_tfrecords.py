"""The converter's command line: a real run, and one clear line for each kind of bad input."""
import json
import os

from cli import assert_one_line_error, run


def test_cli_converts_with_progress_and_summary(tmp_path):
    data = tmp_path / "data"
    assert run("tools.make_synthetic", f"--output_dir={data}", "--num_patients=12", "--size_range=96,128").returncode == 0
    out = tmp_path / "records"
    result = run("tools.make_tfrecords", f"--data_dir={data}", f"--output_dir={out}", "--image_size=16",
                 "--encoding=raw", "--num_workers=2", "--split_fractions=0.5,0.25,0.25")
    assert result.returncode == 0, result.stderr
    assert "converting:" in result.stdout and "img/s" in result.stdout
    assert "split" in result.stdout and "patients" in result.stdout  # the summary table
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["settings"]["encoding"] == "raw" and manifest["timing"]["workers"] == 2
    assert manifest["settings"]["split_fractions"] == [0.5, 0.25, 0.25]

    again = run("tools.make_tfrecords", f"--data_dir={data}", f"--output_dir={out}")
    assert_one_line_error(again, "--output_dir", "--overwrite")
    assert json.load(open(out / "manifest.json")) == manifest  # untouched


def test_cli_bad_input_is_one_line(tmp_path):
    assert_one_line_error(run("tools.make_tfrecords", f"--data_dir={tmp_path / 'nope'}", f"--output_dir={tmp_path / 'o'}"),
                          "--data_dir", "is not a folder")
    assert_one_line_error(run("tools.make_tfrecords", f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}",
                              "--split_fractions=a,b,c"), "--split_fractions")
    assert not os.path.exists(tmp_path / "o")


def test_overwrite_never_removes_the_images(tmp_path):
    from conftest import make_synthetic

    images = make_synthetic(tmp_path / "project" / "images", num_patients=6)
    result = run("tools.make_tfrecords", f"--data_dir={images}", f"--output_dir={tmp_path / 'project'}",
                 "--overwrite", "--image_size=32")
    assert_one_line_error(result, "--output_dir", "would replace the images")
    assert os.listdir(images)  # the user's films are still there


def test_a_killed_worker_is_one_line_naming_a_file_not_a_wait(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from cli import ROOT
    from conftest import make_synthetic

    images = make_synthetic(tmp_path / "images", num_patients=80)
    command = [sys.executable, "-m", "tools.make_tfrecords", f"--data_dir={images}", f"--output_dir={tmp_path / 'out'}",
               "--num_workers=2", "--image_size=0", "--encoding=png"]  # full-size PNG: seconds of work per worker
    process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    killed = None
    while killed is None and process.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                status = open(f"/proc/{pid}/status").read()
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if f"\nPPid:\t{process.pid}\n" in status and b"spawn_main" in cmdline:
                os.kill(int(pid), signal.SIGKILL)  # what the OOM killer does
                killed = pid
                break
        time.sleep(0.05)
    assert killed, "no worker process was seen"
    out, err = process.communicate(timeout=120)  # a hang guard: before, the parent waited forever
    assert process.returncode == 2, err[-2000:]
    assert "Traceback" not in err and "a conversion worker died" in err and images in err, err[-2000:]
    assert not (tmp_path / "out").exists()


def test_nonsense_numbers_are_one_line_errors(tmp_path):
    (tmp_path / "data").mkdir()
    for flag, said in (("--split_fractions=nan,0.5,0.5", "--split_fractions"), ("--shard_size_mb=nan", "finite"),
                       ("--image_size=100000", "--image_size=100000 must be in"), ("--seed=-1", "--seed=-1"),
                       ("--max_image_pixels=100000000000000000", "--max_image_pixels")):
        assert_one_line_error(run("tools.make_tfrecords", f"--data_dir={tmp_path / 'data'}",
                                  f"--output_dir={tmp_path / 'out'}", flag), said)


def _file_size_limit(size):
    """preexec_fn: files may not grow past `size` bytes, so writes fail as on a full disk (EFBIG)."""
    def limit():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_a_write_that_fails_is_one_line_and_leaves_nothing(tmp_path):
    from conftest import make_synthetic

    images = make_synthetic(tmp_path / "images", num_patients=12)
    out = tmp_path / "records"
    result = run("tools.make_tfrecords", f"--data_dir={images}", f"--output_dir={out}", "--image_size=64",
                 "--encoding=raw", "--min_shards=1",
                 preexec_fn=_file_size_limit(20_000))  # a shard of 10 films is 40 KB
    assert_one_line_error(result, f"--output_dir={out}: cannot write (", "nothing was written there")
    assert sorted(os.listdir(tmp_path)) == ["images"]  # neither the output nor a staging folder
