"""A worker of the 2-process `keras-dp train` test.

Usage: train_worker.py BASE_DIR ARGS...
Runs `keras-dp train ARGS...` in BASE_DIR/w<task index> (so a relative
--output-dir shows which worker wrote what) and exits with its status.
"""

import os
import sys

from keras_dp.cli import main

base = sys.argv[1]
folder = os.path.join(base, f"w{os.environ['KERAS_DP_TASK_INDEX']}")
os.makedirs(folder, exist_ok=True)
os.chdir(folder)
sys.exit(main(["train", *sys.argv[2:]]))
