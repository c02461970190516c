"""Curriculum: the order Stage-2 records are trained in, as the sampler the HF Trainer draws batches from.

    --curriculum none              the Trainer's own shuffle (default)
    --curriculum open_then_closed  open-ended records first, closed-ended after
    --curriculum closed_then_open  the reverse
    --curriculum mixed             open and closed interleaved evenly: every stretch of the run holds them in the
                                   data's proportion (--curriculum_key picks other groups, default answer_type)
    --curriculum custom --curriculum_key "task=vqa|grounding,answer_type=open|closed"
                                   phases = groups of equal key values, ordered field by field: listed values in the
                                   given order, then unlisted ones sorted (numbers numerically), records lacking the
                                   field last

A key field is a meta field; `answer_type` falls back to data_trans' rule when meta has none (closed iff the answer
is yes/no) and `task` to "vqa". Inside a phase the order is shuffled, from (--seed or --data_seed, epoch, phase).

--curriculum_scope run (default): the phases span the whole run, so open_then_closed trains on the open records for
as many passes as the run makes over the data, then on the closed ones. Each phase gets the share of the run's
samples that it has of the data, and the last phase ends at the last step (the run length is read from the Trainer).
--curriculum_scope epoch: the phases repeat in every epoch.

Multi-GPU: every rank builds the same global sequence (the sampler has no `generator` attribute for accelerate to
re-seed) and accelerate shards it by batches (rank r takes batches r, r+W, ...), so the ranks together follow the
order. Resume: the sequence is a pure function of (records, plan, seed, epoch, run length), so skipping the first N
batches of the resumed epoch lands where the run stopped. Changing max_steps / epochs on resume re-plans the run.
The Trainer drives the sampler through public callback events only (CurriculumCallback): the run length at
on_train_begin, the epoch at on_epoch_begin.

    python -m train.curriculum --data train.json --curriculum open_then_closed           # preview the phases
    python -m train.curriculum --data train.json --keep answer_type=closed --out closed.json   # a subset by key
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from torch.utils.data import Sampler
from transformers import TrainerCallback

from medvl.categories import categorize  # the one rule the eval tables use too
from medvl.jsonio import write_json
from train.data import load_records

CURRICULA = ("none", "open_then_closed", "closed_then_open", "mixed", "custom")
SCOPES = ("run", "epoch")
PRESET_KEYS = {"open_then_closed": "answer_type=open|closed", "closed_then_open": "answer_type=closed|open"}


# ------------------------------------------------------------------------------------------------ keys and phases
@dataclass(frozen=True)
class KeyField:
    name: str
    order: tuple[str, ...] = ()   # listed values come first, in this order


def parse_key(spec: str) -> list[KeyField]:
    """'task=vqa|grounding,answer_type' -> [KeyField('task', ('vqa', 'grounding')), KeyField('answer_type')]."""
    fields = []
    for part in [p.strip() for p in (spec or "").split(",") if p.strip()]:
        name, _, values = part.partition("=")
        if not name.strip():
            raise ValueError(f"--curriculum_key: empty field name in {spec!r}")
        fields.append(KeyField(name.strip(), tuple(v.strip() for v in values.split("|") if v.strip())))
    if not fields:
        raise ValueError("--curriculum_key is empty; give meta fields, e.g. 'answer_type=open|closed'")
    return fields


def record_value(rec: dict, name: str) -> str | None:
    meta = rec.get("meta") or {}
    value = meta.get(name)
    if name == "answer_type" and str(value or "").lower() not in ("open", "closed"):
        value = categorize(rec)["answer_type"]
    elif name == "task" and not value:
        value = "vqa"
    return None if value is None else str(value).lower() if name in ("answer_type", "task") else str(value)


def _rank(field_: KeyField, value: str | None) -> tuple:
    if value is None:
        return (3,)
    if value in field_.order:
        return (0, field_.order.index(value))
    try:
        return (1, float(value), value)
    except ValueError:
        return (2, value)


@dataclass
class Phase:
    name: str
    indices: list[int]


def group_records(records: list[dict], fields: list[KeyField]) -> list[Phase]:
    groups: dict[tuple, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(tuple(record_value(rec, f.name) for f in fields), []).append(i)
    keys = sorted(groups, key=lambda k: tuple(_rank(f, v) for f, v in zip(fields, k)))
    return [Phase(",".join(f"{f.name}={v}" for f, v in zip(fields, k)), groups[k]) for k in keys]


@dataclass
class CurriculumPlan:
    name: str
    key: str
    scope: str
    interleave: bool
    phases: list[Phase]
    n_records: int = field(init=False)

    def __post_init__(self):
        self.n_records = sum(len(p.indices) for p in self.phases)

    def describe(self) -> dict:
        return {"curriculum": self.name, "key": self.key, "scope": self.scope,
                "mode": "interleave" if self.interleave else "sequential",
                "phases": [{"name": p.name, "n_records": len(p.indices)} for p in self.phases]}


def build_plan(records: list[dict], curriculum: str, key: str | None = None, scope: str = "run") -> CurriculumPlan | None:
    """The plan for --curriculum/--curriculum_key/--curriculum_scope; None for 'none' (the Trainer's shuffle)."""
    if curriculum not in CURRICULA:
        raise ValueError(f"--curriculum must be one of {list(CURRICULA)}, got {curriculum!r}")
    if scope not in SCOPES:
        raise ValueError(f"--curriculum_scope must be one of {list(SCOPES)}, got {scope!r}")
    if curriculum == "none":
        if key:
            raise ValueError("--curriculum_key needs --curriculum custom or mixed")
        return None
    if curriculum == "custom" and not key:
        raise ValueError("--curriculum custom needs --curriculum_key, e.g. 'task=vqa|grounding,answer_type=open|closed'")
    if curriculum in PRESET_KEYS:
        if key:
            raise ValueError(f"--curriculum {curriculum} fixes the key ({PRESET_KEYS[curriculum]}); "
                             "use --curriculum custom for another one")
        key = PRESET_KEYS[curriculum]
    key = key or "answer_type=open|closed"  # mixed
    if not records:
        raise ValueError("a curriculum needs training records")
    phases = group_records(records, parse_key(key))
    return CurriculumPlan(curriculum, key, scope, interleave=curriculum == "mixed", phases=phases)


# ------------------------------------------------------------------------------------------------ the sampler
class CurriculumSampler(Sampler[int]):
    """Yields one epoch of the plan's sequence per iteration; `set_epoch` picks the epoch, `plan_run` the run length.

    Deliberately no `generator` attribute: accelerate would replace the shuffle's seed with a random one."""

    def __init__(self, plan: CurriculumPlan, seed: int):
        self.plan, self.seed = plan, int(seed)
        self.n = plan.n_records
        self.epoch = 0
        self.plan_run(1, self.n)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan_run(self, num_epochs: int, consumed_samples: int) -> None:
        """Run scope: how many epochs the Trainer runs and how many sample positions it consumes in all."""
        self.num_epochs = max(1, int(num_epochs))
        self.consumed = max(1, min(int(consumed_samples), self.num_epochs * self.n))
        sizes = [len(p.indices) for p in self.plan.phases]
        quotas = [round(self.consumed * s / self.n) for s in sizes[:-1]]
        quotas.append(self.num_epochs * self.n - sum(quotas))  # the last phase also fills the never-consumed tail
        self.segments = list(np.cumsum([0] + quotas))
        # where each phase lies in the consumed part of the run, for the run summary
        self.phase_spans = [[int(min(a, self.consumed)), int(min(b, self.consumed))]
                            for a, b in zip(self.segments[:-1], self.segments[1:])]

    @lru_cache(maxsize=64)
    def _perm(self, *key: int) -> np.ndarray:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *key])).permutation(len(self.plan.phases[key[-1]].indices))

    def _shuffled(self, p: int, *key: int) -> np.ndarray:
        return np.asarray(self.plan.phases[p].indices)[self._perm(*key, p)]

    def epoch_order(self, epoch: int) -> np.ndarray:
        phases = self.plan.phases
        if self.plan.interleave:  # each phase spread evenly over the epoch, by fractional position
            items = [self._shuffled(p, 0, epoch) for p in range(len(phases))]
            pos = np.concatenate([(np.arange(len(x)) + 0.5) / len(x) for x in items])
            tie = np.concatenate([np.full(len(x), p) for p, x in enumerate(items)])
            return np.concatenate(items)[np.lexsort((tie, pos))]
        if self.plan.scope == "epoch":
            return np.concatenate([self._shuffled(p, 0, epoch) for p in range(len(phases))])
        e = epoch % self.num_epochs  # past the planned run (not expected), the run's sequence starts over
        lo, hi = e * self.n, (e + 1) * self.n
        out = []
        for p in range(len(phases)):
            a, b = max(lo, self.segments[p]), min(hi, self.segments[p + 1])
            size = len(phases[p].indices)
            for rep in range((a - self.segments[p]) // size, math.ceil((b - self.segments[p]) / size) if b > a else 0):
                start = self.segments[p] + rep * size  # stream position of this pass's first item
                chunk = self._shuffled(p, 1, rep)
                out.append(chunk[max(a - start, 0): max(0, min(b - start, size))])
        return np.concatenate(out)

    def __iter__(self):
        return iter(self.epoch_order(self.epoch).tolist())

    def describe(self, records: list[dict] | None = None) -> dict:
        """The plan, the run it was laid out for, and a fingerprint of the order of every planned epoch."""
        orders = [self.epoch_order(e) for e in range(self.num_epochs)]
        digest = hashlib.sha256(np.concatenate(orders).astype(np.int64).tobytes()).hexdigest()
        out = dict(self.plan.describe(), seed=self.seed, planned_epochs=self.num_epochs,
                   consumed_samples=self.consumed, order_sha256=digest)
        if self.plan.scope == "run" and not self.plan.interleave:
            for ph, span in zip(out["phases"], self.phase_spans):
                ph["run_positions"] = span
        if records is not None:
            out["first_ids"] = [str(records[i].get("id")) for i in orders[0][:20]]
        return out

    def order_ids(self, records: list[dict]) -> list[list[str]]:
        return [[str(records[i].get("id")) for i in self.epoch_order(e)] for e in range(self.num_epochs)]


def consumed_samples(num_epochs: int, num_update_steps_per_epoch: int, max_steps: int, total_batch: int, n: int) -> int:
    """Sample positions a Trainer run reads: full epochs, then the steps of the last (possibly cut) epoch."""
    last_steps = max_steps - (num_epochs - 1) * num_update_steps_per_epoch
    return (num_epochs - 1) * n + min(n, max(0, last_steps) * total_batch)


class CurriculumCallback(TrainerCallback):
    """Drives a CurriculumSampler from the Trainer's public events (no Trainer internals):

    on_train_begin  lays the run-scope phases out over the run: state.max_steps and state.num_train_epochs are the
                    Trainer's (resumed runs included), the optimizer steps per epoch follow from the prepared
                    train_dataloader's length (batches per process) and gradient accumulation, and one optimizer
                    step reads state.train_batch_size x accumulation x world_size sample positions.
    on_epoch_begin  sets the sampler's epoch from state.epoch. The Trainer's own set_epoch does not reach the sampler
                    on a resumed multi-process run (accelerate's skip-first-batches wrapper does not pass it on),
                    which would replay epoch 0's order in the resumed epoch; state.epoch, restored from the
                    checkpoint, is the resumed epoch plus a fraction, so int() of it is the epoch being trained."""

    def __init__(self, sampler: CurriculumSampler):
        self.sampler = sampler

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        ga = args.gradient_accumulation_steps
        batches = (len(train_dataloader) if train_dataloader is not None  # per process, as accelerate shards it
                   else math.ceil(len(self.sampler) / (state.train_batch_size * args.world_size)))
        per_epoch = max(batches // ga + int(batches % ga > 0), 1)  # as the Trainer counts its update steps
        total_batch = state.train_batch_size * ga * args.world_size
        self.sampler.plan_run(state.num_train_epochs,
                              consumed_samples(state.num_train_epochs, per_epoch, state.max_steps, total_batch,
                                               len(self.sampler)))

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(state.epoch or 0))


# ------------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.curriculum", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="records (.json/.jsonl; comma-separate several)")
    p.add_argument("--curriculum", default="open_then_closed", choices=CURRICULA)
    p.add_argument("--curriculum_key", default=None)
    p.add_argument("--curriculum_scope", default="run", choices=SCOPES)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep", default=None, help="write only records whose key matches, e.g. answer_type=closed")
    p.add_argument("--out", default=None, help="with --keep: where the subset goes (.json)")
    a = p.parse_args(argv)
    records = load_records(a.data)
    if a.keep:
        if not a.out:
            p.error("--keep needs --out")
        (f,) = parse_key(a.keep)
        kept = [r for r in records if record_value(r, f.name) in f.order]
        write_json(a.out, kept)
        print(f"kept {len(kept)} of {len(records)} records with {a.keep} -> {a.out}")
        return 0
    plan = build_plan(records, a.curriculum, a.curriculum_key, a.curriculum_scope)
    if plan is None:
        print("curriculum none: the Trainer's own shuffle")
        return 0
    print(json.dumps(CurriculumSampler(plan, a.seed).describe(records), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
