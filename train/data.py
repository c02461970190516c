"""Training dataset: validated records, encoded lazily by the one preprocessing path."""
from __future__ import annotations

import logging

from torch.utils.data import Dataset

from data_process.io import read_records
from .preprocess import Encoded, SampleError, VLProcessor

log = logging.getLogger(__name__)


def load_records(paths: str, bad_lines: str = "raise") -> list:
    """Records from one or more comma-separated .json/.jsonl files (bad_lines: see data_process.io.iter_jsonl)."""
    out: list = []
    for p in [p.strip() for p in paths.split(",") if p.strip()]:
        out += read_records(p, bad_lines)
    return out


class VLDataset(Dataset):
    """Records were validated before training; should one still fail (a file removed mid-run), it is counted in
    `failed` (and the run summary) and the next record is used, so one sample never kills step N."""

    def __init__(self, records: list[dict], processor: VLProcessor):
        self.records, self.processor = records, processor
        self.failed: dict[str, str] = {}

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i: int) -> Encoded:
        for k in range(len(self.records)):
            rec = self.records[(i + k) % len(self.records)]
            try:
                enc = self.processor.encode(rec, train=True)
                enc.key = str(rec.get("id"))
                return enc
            except SampleError as e:
                self.failed[str(rec.get("id"))] = str(e)
                log.warning("skipping %s at training time: %s", rec.get("id"), e)
        raise RuntimeError("no record of the dataset could be encoded")
