"""One declaration per setting: each command's flag defaults are its config's defaults, and every
flag reaches the config (tests/helpers/flags_agree.py, one process per command)."""
import json
import os
import subprocess
import sys

import pytest

from cli import ROOT

COMMANDS = {
    "cxr_fast.train": ["--data_dir=d", "--model_dir=m"],
    "cxr_fast.evaluate": ["--data_dir=d", "--model_dir=m"],
    "cxr_fast.make_tfrecords": ["--data_dir=d", "--output_dir=o"],
    "cxr_fast.make_synthetic": ["--output_dir=o"],
    "cxr_fast.predict": ["--model=m"],
    "cxr_fast.export": ["--model=m", "--export_dir=e"],
    "cxr_fast.launch_local": [],
    "cxr_fast.data_service": ["--role=local"],
}


def _disagreements(module, *required):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", "flags_agree.py"), module,
                             *required], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_flags_and_config_agree(module):
    assert _disagreements(module, *COMMANDS[module]) == []


def test_a_default_written_twice_or_a_flag_left_out_is_caught(tmp_path):
    # A copy of train.py whose --batch_size default is its own and whose --cache is never read.
    source = open(os.path.join(ROOT, "cxr_fast", "train.py")).read()
    broken = source.replace('flags.DEFINE_integer("batch_size", _DATA.global_batch_size,',
                            'flags.DEFINE_integer("batch_size", 32,').replace(" cache=FLAGS.cache,", "")
    assert broken.count("32,") > source.count("32,") and "cache=FLAGS.cache" not in broken
    (tmp_path / "broken_train.py").write_text(broken)
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
                             f"sys.argv = ['x', 'broken_train', '--data_dir=d', '--model_dir=m']; "
                             f"exec(open({os.path.join(ROOT, 'tests', 'helpers', 'flags_agree.py')!r}).read())"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        "data.global_batch_size: the flags give 32, the config declares 64", "--cache does not reach the config"]
