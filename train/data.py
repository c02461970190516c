"""Training dataset: validated records, encoded lazily by the one preprocessing path."""
from __future__ import annotations

import logging

from torch.utils.data import Dataset

from medvl.jsonio import read_records
from medvl.encoding import Encoded, SampleError, VLProcessor

log = logging.getLogger(__name__)


def load_records(paths: str, bad_lines: str = "raise") -> list:
    """Records from one or more comma-separated .json/.jsonl files (bad_lines: see medvl.jsonio.iter_jsonl)."""
    out: list = []
    for p in [p.strip() for p in paths.split(",") if p.strip()]:
        out += read_records(p, bad_lines)
    return out


class VLDataset(Dataset):
    """Records were validated before training; should one still fail (a file removed mid-run), it is skipped for the
    next record and named in the returned sample's `skipped`, so one sample never kills step N. The failure travels
    with the sample through the collator and the batch, because a dataloader worker's own state never reaches the
    main process (VLTrainer collects it into the run summary)."""

    def __init__(self, records: list[dict], processor: VLProcessor):
        self.records, self.processor = records, processor

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i: int) -> Encoded:
        skipped: dict[str, str] = {}
        for k in range(len(self.records)):
            rec = self.records[(i + k) % len(self.records)]
            try:
                enc = self.processor.encode(rec, train=True)
                enc.key, enc.skipped = str(rec.get("id")), skipped
                return enc
            except SampleError as e:
                skipped[str(rec.get("id"))] = str(e)
                log.warning("skipping %s at training time: %s", rec.get("id"), e)
        raise RuntimeError("no record of the dataset could be encoded")
