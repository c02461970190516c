"""data_process/ package. Importing medvl first silences third-party start-up noise before any of it loads (medvl/quiet.py)."""
import medvl  # noqa: F401
