"""The benchmarks run end to end on tiny inputs and report every variant they promise."""
import json
import os

import pytest

from benchmarks import augment, common, end_to_end

pytestmark = pytest.mark.heavy(65)  # ~seconds here; scheduled first (tests/conftest.py)


def test_augment_benchmark_compares_both_implementations_with_a_step():
    result = augment.run(seconds=0.1, batch=4, size=32, backbone="tiny", log=lambda *_: None)
    names = [v["name"] for v in result["variants"]]
    assert names == ["augment fused", "augment chain", "tiny CNN train step (float32)"]
    assert result["fused_speedup_over_chain"] > 0 and 0 < result["fused_share_of_step"]


def test_the_fixed_cost_proxy_holds_the_real_models_trainable_variables():
    from benchmarks import train_step
    from cxr_fast.config import ModelConfig
    from cxr_fast.training import model as model_lib

    config = ModelConfig(backbone="B0", image_size=32, weights="none", freeze_fraction=0.7)
    real, _ = model_lib.build_model(config)
    proxy, _ = train_step.variables_proxy(train_step.trainable_shapes(config))(ModelConfig(image_size=8))
    held = proxy.get_layer("held").trainable_weights
    assert [tuple(w.shape) for w in held] == [tuple(w.shape) for w in real.trainable_weights]
    assert len(proxy.trainable_weights) == len(held) + 2  # and the dense output's kernel and bias


def test_device_check_names_the_device_and_dtype_of_the_resample():
    from benchmarks import train_step

    lines = []
    train_step.device_check(log=lines.append)
    assert lines[0].startswith("augmentation on /CPU:0: output float32 on ") and "CPU:0" in lines[0]
    assert any(line.startswith("ImageProjectiveTransformV3 float32: ran on ") for line in lines)


PEER_NAMES = {"benchmarks.peer_torch": "PyTorch DataLoader + torchvision", "benchmarks.peer_monai": "MONAI",
              "benchmarks.peer_dali": "NVIDIA DALI on the CPU"}


def test_run_all_writes_json_charts_and_table(tmp_path):
    pytest.importorskip("tf_keras", reason="pip install --no-deps -r benchmarks/requirements-reference.txt")
    from PIL import Image

    from benchmarks import run_all, train_step

    payload = run_all.run(str(tmp_path), log=lambda *_: None, **run_all.QUICK)  # what `--quick` runs
    assert set(payload["results"]) == {"input_pipeline", "augment", "train_step", "convert", "end_to_end"}
    variants = payload["results"]["input_pipeline"]  # every variant the input benchmark promises
    names = [v["name"] for v in variants]
    assert names[0] == "reference ImageDataGenerator" and variants[0]["ratio_to_reference"] == 1.0
    for name in ("cxr_fast jpeg cache=none", "cxr_fast jpeg cache=memory", "cxr_fast jpeg cache=none +augment"):
        assert {v["cores"] for v in variants if v["name"] == name} == {1, os.cpu_count()}  # like for like: 1 core
    assert all(v["settings"]["reads"] and v["settings"]["augment"] for v in variants)
    assert "cxr_fast jpeg via tf.data service" in names
    for cache in ("none", "memory"):  # the same images as a 14-finding multi-label set (issue 15)
        assert f"cxr_fast jpeg multi-label (14 findings) cache={cache}" in names
        mixed = next(v for v in variants if v["name"] == f"cxr_fast jpeg mixed: two record sets as one cache={cache}")
        assert mixed["mixed_over_single"] > 0 and "in turns" in mixed["settings"]["measured"]  # beside it: mixing's cost
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
    reference, on_cpu, on_device, *peers = payload["results"]["end_to_end"]
    names = [p["name"] for p in peers]
    for module, package, _ in end_to_end.PEERS:  # each peer's two forms on the same films, or none when not installed
        forms = [n for n in names if n.startswith(PEER_NAMES[module])]
        assert len(forms) == (2 if end_to_end.installed(package) else 0), (module, names)
    for peer in peers:
        assert "not measured" not in peer["name"], peer["name"]
        assert peer["epoch_images"] == reference["epoch_images"] and peer["img_per_s"] > 0
        assert peer["extrapolated"] == (peer["measured_epochs"] < payload["epochs"])
    if "cxr_fast's" in " ".join(names):  # DALI reading cxr_fast's records: its preparation is their conversion
        dali = next(p for p in peers if "cxr_fast's" in p["name"])
        assert dali["preparation_s"] == pytest.approx(on_cpu["preparation_s"])
    assert reference["extrapolated"] and reference["measured_epochs"] == 1 and reference["preparation_s"] == 0
    assert not on_cpu["extrapolated"] and on_cpu["preparation_s"] > 0 and on_cpu["measured_epochs"] == 2
    assert reference["epoch_images"] == on_cpu["epoch_images"] == on_device["epoch_images"]  # the same train/ films
    assert on_cpu["total_s"] == pytest.approx(on_cpu["preparation_s"] + on_cpu["stream_s"])
    figures = payload["figures"]
    assert figures["train_records"] == payload["train_records"] > 0 and figures["raw_no_cache_img_per_s"] is None
    assert figures["end_to_end_30_epochs_over_reference"] == on_cpu["speedup_over_reference"]
    assert figures["mixed_over_single_records"] == next(v["mixed_over_single"] for v in variants
                                                        if v["name"].endswith("as one cache=none"))
    assert [v["settings"]["images"] for v in payload["results"]["convert"]] == [12, 12]  # a sample of the folder
    assert [v["name"] for v in payload["results"]["augment"]] == ["augment fused", "augment chain"]  # of train_step's
    step_rows = payload["results"]["train_step"]
    assert [v["name"] for v in step_rows] == [
        "train loop, 2-variable model, 8 px resident batch",
        "train loop, EfficientNetB2's 305 variables + Adam, 8 px resident batch",
        "train loop fixed cost, 305 one-value variables + Adam, 8 px resident batch",
        "cached 32 px input alone", "train loop + trivial model on cached 32 px input",
        "host ceiling = min(fixed cost, input)", "train step, input pipeline", "precise BatchNorm statistics (8 batches)"]
    rates = [v["img_per_s"] for v in step_rows]
    assert all(rate > 0 for rate in rates) and rates[5] == min(rates[2:4]) and step_rows[2]["settings"]["replicas"] == 1
    assert figures["host_ceiling_over_h200_b2"] == rates[5] / train_step.H200_B2_128_IMG_PER_S
    precise = step_rows[-1]  # its share of an epoch: pass seconds / (steps per epoch / steps per second)
    assert precise["kermany_epoch_share"] == pytest.approx(precise["seconds_per_pass"] / (5216 // 8 / (rates[6] / 8)))
    assert payload["augment_share_of_step"] == rates[6] / payload["results"]["augment"][0]["img_per_s"]
    assert list(payload["part_seconds"]) == ["input_pipeline", "train_step", "augment", "convert", "end_to_end"]
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# B\n| `train_records` | >= 1 | records |\n{run_all.MARKERS[0]}\nold\n{run_all.MARKERS[1]}\ntail\n")
    lines = []
    assert run_all.finish(payload, "python -m benchmarks.run_all --output_dir=x", str(tmp_path), str(page),
                          str(page), log=lines.append) == 0
    section = (tmp_path / "report.md").read_text()
    assert "python -m benchmarks.run_all --output_dir=x" in section and "(extrapolated from 1)" in section
    text = page.read_text()
    assert "old" not in text and section in text and text.endswith(f"{run_all.MARKERS[1]}\ntail\n")
    assert lines[-1] == f"every target in {page} met"
    targets_md = tmp_path / "targets.md"  # a miss and a figure this run did not measure: exit 1, both named
    targets_md.write_text("| `train_records` | >= 1000000000 | records |\n| `raw_no_cache_img_per_s` | >= 1 | raw |\n")
    lines = []
    assert run_all.finish(payload, "x", str(tmp_path), targets_file=str(targets_md), log=lines.append) == 1
    assert [line.split(":")[0] for line in lines if line.startswith("TARGET MISSED")] == ["TARGET MISSED"] * 2
    assert "train_records (records)" in lines[-2] and "raw_no_cache_img_per_s (raw): not measured" in lines[-1]


def test_quick_refuses_to_check_or_write_down_its_figures(tmp_path):
    from cli import assert_one_line_error, run

    assert_one_line_error(run("benchmarks.run_all", f"--output_dir={tmp_path / 'out'}", "--quick", "--check"),
                          "--quick", "--check")
    assert not (tmp_path / "out").exists()


def test_a_peer_that_fails_here_is_a_row_not_measured_with_its_error(tmp_path):
    rows = end_to_end.peer_rows("benchmarks.peer_dali", "json", "peer-dali", ["--epochs=1"], str(tmp_path),
                                log=lambda *_: None)  # no --data_root: the peer exits with absl's error
    assert len(rows) == 1 and rows[0]["name"].startswith("dali: not measured:") and "data_root" in rows[0]["name"]
    assert end_to_end.markdown(rows).count("not measured") == 1
    assert end_to_end.peer_rows("benchmarks.peer_x", "no_such_package_here", "peer", [], str(tmp_path),
                                log=lambda *_: None) == []


def test_targets_are_read_from_the_page_and_a_miss_is_named(tmp_path):
    from benchmarks import targets

    page = tmp_path / "benchmarks.md"
    page.write_text("| figure | target | what |\n|---|---|---|\n"
                        "| `jpeg_no_cache_img_per_s` | >= 12,000 | JPEG, no cache |\n"
                        "| `augment_share_of_step` | <= 0.02 | augmentation's share |\n"
                        "| `raw_no_cache_img_per_s` | >= 25000 | raw |\n")
    read = targets.read(str(page))
    assert read[0] == ("jpeg_no_cache_img_per_s", ">=", 12000.0, "JPEG, no cache")
    met = {"jpeg_no_cache_img_per_s": 16000, "augment_share_of_step": 0.01, "raw_no_cache_img_per_s": 30000}
    assert targets.check(met, read) == []
    missed = targets.check({**met, "jpeg_no_cache_img_per_s": 11000, "raw_no_cache_img_per_s": None}, read)
    assert missed == ["jpeg_no_cache_img_per_s (JPEG, no cache): 11,000, target >= 12,000",
                      "raw_no_cache_img_per_s (raw): not measured in this run"]
    assert targets.check({**met, "augment_share_of_step": 0.03}, read)[0].startswith("augment_share_of_step")
    page.write_text("# no table here\n")
    with pytest.raises(ValueError, match="no targets table"):
        targets.read(str(page))


def test_the_benchmarks_page_has_a_target_for_every_figure():
    from benchmarks import run_all, targets

    page = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
    names = {name for name, *_ in targets.read(page)}
    payload = {"results": {}, "machine": {"cores": 2}}
    assert names == set(targets.figures(payload, 2))
    assert all(marker in open(page).read() for marker in run_all.MARKERS)


def test_a_measured_pipeline_stops_its_threads(records_dir):
    # Each variant's iterator must be gone before the next is measured (else its threads and cache
    # compete with it: seen 20 threads left per variant).
    from cxr_fast.config import DataConfig
    from cxr_fast.data import pipeline, recordset

    def threads():
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Threads:")).split()[1])

    record_set = recordset.open_record_set(records_dir)
    config = DataConfig(data_dir=records_dir, image_size=32, global_batch_size=8, cache="memory")
    common.dataset_images_per_second(pipeline.train_dataset(record_set, config), 0.1)  # TensorFlow's own pools
    before = threads()
    for _ in range(3):
        assert common.dataset_images_per_second(pipeline.train_dataset(record_set, config), 0.1) > 0
    assert threads() - before < 10
