"""`python tests/reliability/pause_at_step.py STEP <python -m train.finetune arguments>`

train.finetune, unchanged, plus one callback: at the end of optimizer step STEP (before that step's checkpoint is
written) it prints PAUSED_AT_STEP and sleeps, so the test can SIGKILL the job at exactly that point. A kill timed
from reading the log instead lands steps late on a fast machine (a tiny model trains ~10 steps/s).
"""
import os
import sys
import time

from transformers import TrainerCallback

import train.trainer
from train.finetune import main


class PauseAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            print(f"PAUSED_AT_STEP {self.step}", flush=True)
            time.sleep(120)
            os._exit(3)  # never train on: a pause the test failed to kill must not write into its directory


if __name__ == "__main__":
    step = int(sys.argv.pop(1))
    init = train.trainer.VLTrainer.__init__

    def init_with_pause(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(PauseAt(step))

    train.trainer.VLTrainer.__init__ = init_with_pause
    main()
