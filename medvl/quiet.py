"""Start-up noise of third-party packages, silenced once for every entry point (they all import medvl first).

- bitsandbytes, imported by peft whenever it is installed, tries to fetch a CPU kernel from the hub at import and
  logs two warnings when it cannot (always, offline); they matter only for --quantization, where a real failure
  still raises.
- DeepSpeed warns "Setting accelerator to CPU" at import on every machine without a GPU.
- peft asks transformers for `is_gradient_checkpointing`, which transformers >= 5.2x deprecates (FutureWarning).
MEDVL_VERBOSE=1 keeps all of them.
"""
import logging
import os
import warnings

NOISY_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels")


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


def quiet_third_party() -> None:
    if os.environ.get("MEDVL_VERBOSE", "") not in ("", "0"):
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # DeepSpeed sets its logger's level when it creates it; a filter added beforehand stays
    logging.getLogger("DeepSpeed").addFilter(_DropMessages("Setting accelerator to CPU"))
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
