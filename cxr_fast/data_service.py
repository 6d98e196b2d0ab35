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

from cxr_fast import entry
from cxr_fast import config as config_lib

_SERVICE = config_lib.ServiceConfig  # the defaults, in one place

flags.DEFINE_enum("role", None, ["dispatcher", "worker", "local"], "Which process to start.")
flags.DEFINE_integer("port", _SERVICE.port, "Port to listen on (dispatcher, worker, local's dispatcher); 0: any "
                     "free port.")
flags.DEFINE_string("dispatcher", _SERVICE.dispatcher, "worker: the dispatcher's HOST:PORT.")
flags.DEFINE_string("worker_address", _SERVICE.worker_address, "worker: HOST:PORT trainers use to reach this "
                    "worker (default: this machine's name and its port).")
flags.DEFINE_string("work_dir", _SERVICE.work_dir, "dispatcher: a folder for its journal, so a restarted "
                    "dispatcher resumes its jobs (fault-tolerant mode).")
flags.DEFINE_integer("num_workers", _SERVICE.num_workers, "local: workers to start beside the dispatcher.")
flags.mark_flag_as_required("role")
FLAGS = flags.FLAGS


def config_from_flags():
    return config_lib.ServiceConfig(role=FLAGS.role, port=FLAGS.port, dispatcher=FLAGS.dispatcher,
                                    worker_address=FLAGS.worker_address, work_dir=FLAGS.work_dir,
                                    num_workers=FLAGS.num_workers).validate()


def main(argv):
    config = config_from_flags()
    from cxr_fast.distributed import service as data_service  # after validation: bad flags fail before TensorFlow loads

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if config.role == "dispatcher":
        servers = [data_service.start_dispatcher(config.port, config.work_dir)]
        print(f"dispatcher listening on {servers[0].target.split('://')[1]}; trainers pass "
              f"--data_service=grpc://{socket.gethostname()}:{servers[0].target.rsplit(':', 1)[1]}", flush=True)
    elif config.role == "worker":
        address = config.worker_address or f"{socket.gethostname()}:%port%"  # TensorFlow fills in %port%
        servers = [data_service.start_worker(config.dispatcher, config.port, address)]
        print(f"worker serving dispatcher {config.dispatcher}", flush=True)
    else:
        local = data_service.LocalService(config.num_workers, config.port)
        servers = [local.dispatcher, *local.workers]
        print(f"dispatcher and {config.num_workers} workers running; trainers pass --data_service={local.target}",
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
