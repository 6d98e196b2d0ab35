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

from cxr_fast import entry, errors
from cxr_fast.distributed import cluster

flags.DEFINE_integer("num_workers", 2, "Worker processes to start.")
flags.DEFINE_string("module", "cxr_fast.train", "The module each worker runs with `python -m`.")
flags.DEFINE_integer("gpus_per_worker", 0, "GPUs per worker; 0: the visible GPUs split evenly (worker i gets "
                     "the i-th block through CUDA_VISIBLE_DEVICES). No effect on machines without GPUs.")
flags.DEFINE_bool("share_gpus", False, "Let every worker see every GPU, with memory growth on (more workers "
                  "than GPUs, small runs).")
flags.DEFINE_float("grace_secs", 10.0, "After a failure: seconds between SIGTERM and SIGKILL for the others.")
FLAGS = flags.FLAGS


def worker_command(module, args):
    """`python -m module args`, with --strategy=multi_worker for the trainer unless args name a strategy."""
    args = list(args)
    if module == "cxr_fast.train" and not any(a.startswith("--strategy=") or a == "--strategy" for a in args):
        args.append("--strategy=multi_worker")
    return [sys.executable, "-m", module, *args]


def main(argv):
    if FLAGS.num_workers < 1:
        raise errors.InputError(f"--num_workers={FLAGS.num_workers} must be at least 1")
    if FLAGS.grace_secs < 0 or FLAGS.gpus_per_worker < 0:
        raise errors.InputError("--grace_secs and --gpus_per_worker must not be negative")
    gpus = cluster.visible_gpus()
    worker_envs = cluster.gpu_environments(FLAGS.num_workers, gpus, FLAGS.gpus_per_worker, FLAGS.share_gpus)
    local = cluster.LocalCluster(worker_command(FLAGS.module, argv[1:]), FLAGS.num_workers,
                                 grace_secs=FLAGS.grace_secs, worker_envs=worker_envs)
    # A launcher stopped by SIGTERM (a scheduler, `kill`) stops its workers too, as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(f"[launcher] {FLAGS.num_workers} workers on {', '.join(local.workers)}", flush=True)
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
