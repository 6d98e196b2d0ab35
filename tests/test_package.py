"""The package: its import-time setting (TensorFlow's pooling allocator for host memory) and what it installs."""
import cxr_fast


def test_host_allocator_defaults_and_respects_the_users_setting():
    environ = {}
    cxr_fast._host_allocator(environ)
    assert environ["TF_CPU_ALLOCATOR_USE_BFC"] == "true"
    assert int(environ["TF_CPU_BFC_MEM_LIMIT_IN_MB"]) > 1024  # the machine's memory, not a fixed cap
    mine = {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_CPU_BFC_MEM_LIMIT_IN_MB": "4096"}
    cxr_fast._host_allocator(mine)
    assert mine == {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_CPU_BFC_MEM_LIMIT_IN_MB": "4096"}


def test_importing_cxr_fast_sets_the_pool_before_tensorflow_allocates():
    # In a fresh process, as a user's: the setting must be in the environment before TensorFlow's
    # first allocation, which is what importing cxr_fast first guarantees.  (The page faults it saves
    # were profiled on the real pipeline; a toy stream does not reproduce them: glibc adapts.)
    import os
    import subprocess
    import sys

    script = ("import os; import cxr_fast; import tensorflow as tf; tf.zeros([4]); "
              "print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'], os.environ['TF_CPU_BFC_MEM_LIMIT_IN_MB'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPU_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"))
    enabled, limit = result.stdout.split()
    assert enabled == "true" and int(limit) > 1024, result.stdout


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
