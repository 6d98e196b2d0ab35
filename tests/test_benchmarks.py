"""The benchmarks run end to end on tiny inputs and report every variant they promise."""
import json

import pytest

from benchmarks import augment, common, input_pipeline
from conftest import make_synthetic


def test_input_pipeline_benchmark_reports_every_variant(tmp_path):
    pytest.importorskip("tf_keras", reason="pip install --no-deps -r benchmarks/requirements-reference.txt")
    images = make_synthetic(tmp_path / "images", num_patients=24, seed=4)
    image_dir = f"{images}/chest_xray/train"
    variants = input_pipeline.run(image_dir, str(tmp_path / "records"), seconds=0.2, log=lambda *_: None)
    names = [v["name"] for v in variants]
    assert names[0] == "reference ImageDataGenerator" and variants[0]["ratio_to_reference"] == 1.0
    for encoding in ("jpeg", "png", "raw"):
        for cache in ("none", "memory"):
            assert f"cxr_fast {encoding} cache={cache}" in names
    assert "cxr_fast jpeg via tf.data service" in names
    assert {v["cores"] for v in variants if v["name"].startswith("cxr_fast")} >= {1}
    assert all(v["img_per_s"] > 0 and v["ratio_to_reference"] > 0 for v in variants)
    assert "x ref" in common.table(variants)
    common.write_json(str(tmp_path / "out.json"), {"variants": variants})
    assert json.load(open(tmp_path / "out.json"))["variants"][0]["name"] == names[0]


def test_augment_benchmark_compares_both_implementations_with_a_step():
    result = augment.run(seconds=0.1, batch=4, size=32, backbone="tiny", log=lambda *_: None)
    names = [v["name"] for v in result["variants"]]
    assert names == ["augment fused", "augment chain", "tiny CNN train step (float32)"]
    assert result["fused_speedup_over_chain"] > 0 and 0 < result["fused_share_of_step"]


def test_train_step_benchmark_compares_resident_and_piped(records_dir):
    from benchmarks import train_step

    result = train_step.run(records_dir, seconds=0.1, backbone="tiny", image_size=32, batch=8, log=lambda *_: None)
    assert [v["name"] for v in result["variants"]] == ["train step, resident batch", "train step, input pipeline"]
    assert all(v["img_per_s"] > 0 for v in result["variants"]) and result["pipeline_share_of_resident"] > 0


def test_run_all_writes_json_charts_and_table(tmp_path):
    pytest.importorskip("tf_keras", reason="pip install --no-deps -r benchmarks/requirements-reference.txt")
    from PIL import Image

    from benchmarks import run_all

    payload = run_all.run(str(tmp_path), seconds=0.1, num_patients=20, backbone="tiny", image_size=32, batch=8,
                          log=lambda *_: None)
    assert set(payload["results"]) == {"input_pipeline", "augment", "train_step", "convert"}
    assert [v["cores"] for v in payload["results"]["convert"]][0] == 1
    for name in payload["results"]:
        image = Image.open(tmp_path / f"{name}.png")
        assert image.format == "PNG" and image.size[0] > 500
    table = open(tmp_path / "benchmarks.md").read()
    assert "| input_pipeline | reference ImageDataGenerator |" in table and "make_tfrecords" in table
    assert json.load(open(tmp_path / "benchmarks.json"))["machine"]["cores"] >= 1
