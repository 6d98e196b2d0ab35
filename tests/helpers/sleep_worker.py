"""A stand-in cluster worker: prints its index, writes its pid and its child's to FOLDER/pids{i},
then worker 1 exits with code 3 after DELAY seconds while the others sleep for 10 minutes.

    python sleep_worker.py FOLDER DELAY   (TF_CONFIG set by cxr_fast.distributed.cluster)
"""
import json
import os
import subprocess
import sys
import time

folder, delay = sys.argv[1], float(sys.argv[2])
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(folder, f"pids{index}"), "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
print("hello from", index, "gpus", os.environ.get("CUDA_VISIBLE_DEVICES", "all"), flush=True)
if index == 1:
    time.sleep(delay)
    sys.exit(3)
time.sleep(600)
