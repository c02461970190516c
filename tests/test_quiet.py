"""Entry points start quietly: third-party start-up noise is silenced (medvl/quiet.py), MEDVL_VERBOSE=1 keeps it."""
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("Failed to load CPU gemm_4bit_forward", "Skipping publisher trust check", "Setting accelerator to CPU",
         "`is_gradient_checkpointing` is deprecated")
# what a training entry point imports, then the calls that emit the noise (peft's checkpointing query included)
PROBE = ("import train.finetune, deepspeed, peft, warnings; from transformers import PreTrainedModel; "
         "warnings.simplefilter('default');"
         "import deepspeed.accelerator as a; a.get_accelerator()")


def _run(tmp_path, **env):
    e = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    e.pop("MEDVL_VERBOSE", None) if "MEDVL_VERBOSE" not in env else None
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout + r.stderr


def test_start_up_noise_is_silenced_and_verbose_keeps_it(tmp_path):
    quiet = _run(tmp_path)
    assert not [n for n in NOISE if n in quiet], quiet[-2000:]
    if not torch.cuda.is_available():  # DeepSpeed's CPU line is the one every GPU-less machine prints
        assert "Setting accelerator to CPU" in _run(tmp_path, MEDVL_VERBOSE="1")
