"""Start-up noise of third-party packages, silenced once for every entry point (they all import medvl).

bitsandbytes, imported by peft whenever it is installed, tries to fetch a CPU kernel from the hub at import and logs
two warnings when it cannot (always, offline); neither matters unless --quantization is used, where a real failure
still raises. MEDVL_VERBOSE=1 keeps them.
"""
import logging
import os

NOISY_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels")


def quiet_third_party() -> None:
    if os.environ.get("MEDVL_VERBOSE", "") not in ("", "0"):
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
