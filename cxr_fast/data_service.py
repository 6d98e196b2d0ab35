"""Starts tf.data service processes that read and decode training batches for cxr_fast.train.

    # on one CPU machine: the dispatcher
    python -m tools.data_service --role=dispatcher --port=5050
    # on every CPU machine: workers (each uses all cores of its machine)
    python -m tools.data_service --role=worker --port=5051 --dispatcher=cpu-host-0:5050
    # the trainers
    python -m cxr_fast.train ... --data_service=grpc://cpu-host-0:5050

    # or all of it on this machine, to try it: a dispatcher and 2 workers in one process
    python -m tools.data_service --role=local --port=5050 --num_workers=2

Runs until stopped (Ctrl-C or SIGTERM).  Service workers open the shard files by the path the
trainer gives, so the record set must be at that path on every service machine.
"""
import signal
import socket
import sys
import threading

from absl import flags

from cxr_fast import entry, errors
from cxr_fast import config as config_lib

flags.DEFINE_enum("role", None, ["dispatcher", "worker", "local"], "Which process to start.")
flags.DEFINE_integer("port", 0, "Port to listen on (dispatcher, worker, local's dispatcher); 0: any free port.")
flags.DEFINE_string("dispatcher", "", "worker: the dispatcher's HOST:PORT.")
flags.DEFINE_string("worker_address", "", "worker: HOST:PORT trainers use to reach this worker "
                    "(default: this machine's name and its port).")
flags.DEFINE_string("work_dir", "", "dispatcher: a folder for its journal, so a restarted dispatcher resumes "
                    "its jobs (fault-tolerant mode).")
flags.DEFINE_integer("num_workers", 2, "local: workers to start beside the dispatcher.")
flags.mark_flag_as_required("role")
FLAGS = flags.FLAGS


def _validate():
    if not 0 <= FLAGS.port < 65536:
        raise errors.InputError(f"--port={FLAGS.port} must be in 0..65535")
    if FLAGS.role == "worker":
        if not FLAGS.dispatcher:
            raise errors.InputError("--role=worker needs --dispatcher=HOST:PORT (the dispatcher's address)")
        config_lib.check_service_address(FLAGS.dispatcher, "--dispatcher", scheme="")
    if FLAGS.role == "local" and FLAGS.num_workers < 1:
        raise errors.InputError(f"--num_workers={FLAGS.num_workers} must be at least 1")


def main(argv):
    _validate()
    from cxr_fast.distributed import service as data_service  # after validation: bad flags fail before TensorFlow loads

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if FLAGS.role == "dispatcher":
        servers = [data_service.start_dispatcher(FLAGS.port, FLAGS.work_dir)]
        print(f"dispatcher listening on {servers[0].target.split('://')[1]}; trainers pass "
              f"--data_service=grpc://{socket.gethostname()}:{servers[0].target.rsplit(':', 1)[1]}", flush=True)
    elif FLAGS.role == "worker":
        address = FLAGS.worker_address or f"{socket.gethostname()}:%port%"  # TensorFlow fills in %port%
        servers = [data_service.start_worker(FLAGS.dispatcher, FLAGS.port, address)]
        print(f"worker serving dispatcher {FLAGS.dispatcher}", flush=True)
    else:
        local = data_service.LocalService(FLAGS.num_workers, FLAGS.port)
        servers = [local.dispatcher, *local.workers]
        print(f"dispatcher and {FLAGS.num_workers} workers running; trainers pass --data_service={local.target}",
              flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    data_service.stop(servers)
    print("stopped", flush=True)
    sys.exit(0)


def run():
    """The console script (`cxr-fast-data-service`) and `python -m`."""
    entry.run_main(main)


if __name__ == "__main__":
    run()
