"""Runs a multi-worker training cluster on this machine: N processes on 127.0.0.1.

    python -m tools.launch_local --num_workers=2 -- --flagfile=model2.flags \
        --data_dir=records/kermany128 --model_dir=runs/model2_2workers

Everything after `--` goes to every worker (`python -m cxr_fast.train` unless --module says
otherwise), with `--strategy=multi_worker` added when not given.  Each worker gets a free port
and its own TF_CONFIG; its output is printed prefixed with `[worker i]`.  If one worker fails
the others are stopped, and the launcher exits with that worker's code.  On real hosts, start
the same train command on each host with that host's TF_CONFIG (docs/scaling.md).  On one
machine with 8 GPUs, `--num_workers=2` gives each worker its own four (`--share_gpus` to share).
"""
import signal
import sys

from absl import flags

from cxr_fast import entry
from cxr_fast import config as config_lib
from cxr_fast.distributed import cluster

_LAUNCH = config_lib.LaunchConfig  # the defaults, in one place

flags.DEFINE_integer("num_workers", _LAUNCH.num_workers, "Worker processes to start.")
flags.DEFINE_string("module", _LAUNCH.module, "The module each worker runs with `python -m`.")
flags.DEFINE_integer("gpus_per_worker", _LAUNCH.gpus_per_worker, "GPUs per worker; 0: the visible GPUs split "
                     "evenly (worker i gets the i-th block through CUDA_VISIBLE_DEVICES). No effect without GPUs.")
flags.DEFINE_bool("share_gpus", _LAUNCH.share_gpus, "Let every worker see every GPU, with memory growth on (more "
                  "workers than GPUs, small runs).")
flags.DEFINE_float("grace_secs", _LAUNCH.grace_secs, "After a failure: seconds between SIGTERM and SIGKILL for "
                   "the others.")
FLAGS = flags.FLAGS


def worker_command(module, args):
    """`python -m module args`, with --strategy=multi_worker for the trainer unless args name a strategy."""
    args = list(args)
    if module == "cxr_fast.train" and not any(a.startswith("--strategy=") or a == "--strategy" for a in args):
        args.append("--strategy=multi_worker")
    return [sys.executable, "-m", module, *args]


def config_from_flags(args=()):
    return config_lib.LaunchConfig(num_workers=FLAGS.num_workers, module=FLAGS.module,
                                   gpus_per_worker=FLAGS.gpus_per_worker, share_gpus=FLAGS.share_gpus,
                                   grace_secs=FLAGS.grace_secs, args=tuple(args)).validate()


def main(argv):
    config = config_from_flags(argv[1:])
    gpus = cluster.visible_gpus()
    worker_envs = cluster.gpu_environments(config.num_workers, gpus, config.gpus_per_worker, config.share_gpus)
    local = cluster.LocalCluster(worker_command(config.module, config.args), config.num_workers,
                                 grace_secs=config.grace_secs, worker_envs=worker_envs)
    # A launcher stopped by SIGTERM (a scheduler, `kill`) stops its workers too, as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(f"[launcher] {config.num_workers} workers on {', '.join(local.workers)}", flush=True)
    if any(worker_envs):
        shares = [f"worker {i}: {env.get('CUDA_VISIBLE_DEVICES', 'all')}"
                  + (" (shared, memory growth)" if env.get("TF_FORCE_GPU_ALLOW_GROWTH") else "")
                  for i, env in enumerate(worker_envs)]
        print("[launcher] GPUs: " + "; ".join(shares), flush=True)
    sys.exit(local.wait())


def run():
    """The console script (`cxr-fast-launch-local`) and `python -m`."""
    entry.run_main(main, devices=False, arguments=True)


if __name__ == "__main__":
    run()
