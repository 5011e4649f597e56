"""``rexlabel worker`` whose training jobs run the stand-in trainer.

``python -m tests.worker.train_worker worker ARGS`` is ``rexlabel worker
ARGS`` with ``worker.training_job.FINETUNE_ARGV`` pointing at
tests/worker/finetune_child.py in the mode :data:`MODE_VARIABLE` names
(default ``slow``): a real worker process and a real child; only the trainer
is the stand-in, which needs no Label Studio.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from backend.cli import main
from worker import training_job

CHILD = Path(__file__).with_name("finetune_child.py")
MODE_VARIABLE = "REXLABEL_TEST_CHILD_MODE"

if __name__ == "__main__":
    mode = os.environ.get(MODE_VARIABLE, "slow")
    training_job.FINETUNE_ARGV = (sys.executable, str(CHILD), mode)
    sys.exit(main())
