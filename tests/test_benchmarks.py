"""The benchmarks run end to end on tiny inputs and report every variant they promise."""
import json

import pytest

from benchmarks import augment, common

pytestmark = pytest.mark.heavy(65)  # ~seconds here; scheduled first (tests/conftest.py)


def test_augment_benchmark_compares_both_implementations_with_a_step():
    result = augment.run(seconds=0.1, batch=4, size=32, backbone="tiny", log=lambda *_: None)
    names = [v["name"] for v in result["variants"]]
    assert names == ["augment fused", "augment chain", "tiny CNN train step (float32)"]
    assert result["fused_speedup_over_chain"] > 0 and 0 < result["fused_share_of_step"]


def test_train_step_benchmark_compares_resident_and_piped(records_dir):
    from benchmarks import train_step

    result = train_step.run(records_dir, seconds=0.1, backbone="tiny", image_size=32, batch=8, log=lambda *_: None,
                            overhead_batch=16, overhead_steps_per_loop=5)
    names = [v["name"] for v in result["variants"]]
    assert names == ["train loop fixed cost (trivial model, 8 px resident batch)", "cached 32 px input alone",
                     "train loop + trivial model on cached 32 px input", "host ceiling = min(loop, input)",
                     "train step, input pipeline", "precise BatchNorm statistics (8 batches)"]
    rates = [v["img_per_s"] for v in result["variants"]]
    assert all(rate > 0 for rate in rates) and rates[3] == min(rates[:2])
    assert result["loop_headroom_over_h200_b2"] == rates[3] / train_step.H200_B2_128_IMG_PER_S
    precise = result["variants"][-1]
    # its share of an epoch: pass seconds / (steps per epoch / steps per second)
    steps_per_second = rates[4] / 8
    assert precise["kermany_epoch_share"] == pytest.approx(precise["seconds_per_pass"] / (5216 // 8 / steps_per_second))


def test_device_check_names_the_device_and_dtype_of_the_resample():
    from benchmarks import train_step

    lines = []
    train_step.device_check(log=lines.append)
    assert lines[0].startswith("augmentation on /CPU:0: output float32 on ") and "CPU:0" in lines[0]
    assert any(line.startswith("ImageProjectiveTransformV3 float32: ran on ") for line in lines)


def test_run_all_writes_json_charts_and_table(tmp_path):
    pytest.importorskip("tf_keras", reason="pip install --no-deps -r benchmarks/requirements-reference.txt")
    from PIL import Image

    from benchmarks import run_all

    payload = run_all.run(str(tmp_path), seconds=0.1, num_patients=20, backbone="tiny", image_size=32, batch=8,
                          log=lambda *_: None, film_sizes=(96, 160), encodings=("jpeg",))
    assert set(payload["results"]) == {"input_pipeline", "augment", "train_step", "convert"}
    variants = payload["results"]["input_pipeline"]  # every variant the input benchmark promises
    names = [v["name"] for v in variants]
    assert names[0] == "reference ImageDataGenerator" and variants[0]["ratio_to_reference"] == 1.0
    for cache in ("none", "memory"):  # png and raw run the same code per encoding; jpeg keeps the test short
        assert f"cxr_fast jpeg cache={cache}" in names and f"cxr_fast jpeg cache={cache} +augment" in names
    assert "cxr_fast jpeg via tf.data service" in names
    assert {v["cores"] for v in variants if v["name"].startswith("cxr_fast")} >= {1}
    assert all(v["img_per_s"] > 0 and v["ratio_to_reference"] > 0 for v in variants)
    assert "x ref" in common.table(variants)
    assert [v["cores"] for v in payload["results"]["convert"]][0] == 1
    for name in payload["results"]:
        image = Image.open(tmp_path / f"{name}.png")
        assert image.format == "PNG" and image.size[0] > 500
    table = open(tmp_path / "benchmarks.md").read()
    assert "| input_pipeline | reference ImageDataGenerator |" in table and "make_tfrecords" in table
    assert json.load(open(tmp_path / "benchmarks.json"))["machine"]["cores"] >= 1
