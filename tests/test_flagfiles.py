"""The reference's flagfiles on a 4-GPU host's topology (4 logical CPUs, one input pipeline):
model1.flags and model2.flags train EfficientNetB2 as written (--weights=none, 64 px, 2 steps and a
batch of 32 forced), model 2 with XLA, whose forward/backward is checked compiled on every replica.

Marked `reference_flagfiles`: an EfficientNetB2 graph for 4 replicas takes 60-95 s to build here,
so these ~4 minutes run apart from the suite's budget, as `.ci/run`'s second pytest call:

    pytest -q -m reference_flagfiles
"""
import json
import os
import re

import pytest

from cli import run

pytestmark = [pytest.mark.reference_flagfiles, pytest.mark.heavy(130)]

SMALL = ["--weights=none", "--image_size=64", "--epochs=1", "--steps_per_epoch=2", "--batch_size=32"]


@pytest.mark.parametrize("flagfile, jit", [("model1.flags", "auto"), ("model2.flags", "on")])
def test_reference_flagfile_trains_on_four_replicas(flagfile, jit, records_dir, tmp_path):
    dump = tmp_path / "xla"
    env = {"CXR_FAST_CPU_DEVICES": "4",
           "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_module_re=forward_backward --xla_dump_hlo_as_text"}
    model_dir = tmp_path / "run"
    result = run("cxr_fast.train", f"--flagfile={flagfile}", f"--data_dir={records_dir}", f"--model_dir={model_dir}",
                 "--strategy=mirrored", f"--jit_compile={jit}", *SMALL, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"MirroredStrategy with 4 replicas, precision float32, XLA {'on' if jit == 'on' else 'off'}" in result.stdout
    assert "EfficientNetB2: 339 layers" in result.stdout
    # 32 / 4 = 8 images per replica: BatchNorm synchronized, or (XLA on CPUs) a warning that says why not
    said = ("warning: 8 images per replica" if jit == "on" else "BatchNorm statistics synchronized over the 4 replicas")
    assert said in result.stdout, result.stdout[-3000:]
    with open(model_dir / "summary.json") as f:
        assert json.load(f)["test"]["count"] > 0
    compiled = {re.match(r"module_(\d+)\.", name).group(1) for name in os.listdir(dump)} if dump.exists() else set()
    # XLA compiles the forward/backward once per replica (each replica traces its own copy): 4 modules.
    assert len(compiled) == (4 if jit == "on" else 0), sorted(compiled)
