"""The synthetic generator's command line."""
import json

from cli import assert_one_line_error, run


def test_cli_writes_the_kermany_layout(tmp_path):
    out = tmp_path / "synthetic"
    result = run("tools.make_synthetic", f"--output_dir={out}", "--num_patients=8", "--size_range=64,96",
                 "--seed=3", "--difficulty=0.4", "--kaggle_quirks")
    assert result.returncode == 0, result.stderr
    summary = json.load(open(out / "synthetic.json"))
    assert summary["patients"] == 8 and summary["settings"]["difficulty"] == 0.4
    assert (out / "chest_xray" / "chest_xray").is_dir() and (out / "__MACOSX").is_dir()
    assert list((out / "chest_xray" / "train").glob("*/*.jpeg"))


def test_cli_bad_flags_are_one_line(tmp_path):
    assert_one_line_error(run("tools.make_synthetic", f"--output_dir={tmp_path}/x", "--size_range=big"), "--size_range")
    assert_one_line_error(run("tools.make_synthetic", f"--output_dir={tmp_path}/x", "--difficulty=3"), "--difficulty")
