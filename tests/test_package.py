"""The package's import-time setting: TensorFlow's pooling allocator for host memory."""
import resource

import tensorflow as tf

import cxr_fast


def test_host_allocator_defaults_and_respects_the_users_setting():
    environ = {}
    cxr_fast._host_allocator(environ)
    assert environ["TF_CPU_ALLOCATOR_USE_BFC"] == "true"
    assert int(environ["TF_CPU_BFC_MEM_LIMIT_IN_MB"]) > 1024  # the machine's memory, not a fixed cap
    mine = {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_CPU_BFC_MEM_LIMIT_IN_MB": "4096"}
    cxr_fast._host_allocator(mine)
    assert mine == {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_CPU_BFC_MEM_LIMIT_IN_MB": "4096"}


def test_batches_behind_a_distributed_iterator_reuse_host_memory():
    """With malloc, each 4 MB batch behind a tf.distribute iterator came from a fresh mmap:
    ~1,000 page faults per batch (the kernel zeroing the pages), half the input throughput."""
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    images = tf.data.Dataset.from_tensors(tf.zeros([128, 128, 1], tf.uint8)).repeat().batch(256)
    iterator = iter(strategy.experimental_distribute_dataset(images))

    @tf.function
    def pull(batches):
        total = tf.constant(0, tf.int64)
        for _ in tf.range(batches):
            total += tf.reduce_sum(tf.cast(next(iterator)[0, 0, 0], tf.int64))
        return total

    pull(tf.constant(5))  # trace, warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pull(tf.constant(40))
    faults_per_batch = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40
    assert faults_per_batch < 100, f"{faults_per_batch:.0f} page faults per 4 MB batch: host memory is not pooled"


def test_only_cxr_fast_is_installed_and_every_command_has_its_console_script():
    import ast
    import configparser
    import os

    from cli import ROOT

    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    assert setup["options.packages.find"]["include"].split() == ["cxr_fast", "cxr_fast.*"]
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines())
    shims = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "tools")) if n.endswith(".py") and n != "__init__.py")
    commands = sorted(["train", "evaluate", "predict", "export"] + shims)
    assert sorted(target.split(":")[0].removeprefix("cxr_fast.") for target in scripts.values()) == commands
    for name, target in scripts.items():
        module, function = target.split(":")
        assert name == "cxr-fast-" + module.removeprefix("cxr_fast.").replace("_", "-")
        tree = ast.parse(open(os.path.join(ROOT, *module.split(".")) + ".py").read())  # each defines its flags
        assert any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body), target
    for shim in shims:  # `python -m tools.NAME` in a clone runs the packaged command
        assert f"from cxr_fast.{shim} import run" in open(os.path.join(ROOT, "tools", shim + ".py")).read()
