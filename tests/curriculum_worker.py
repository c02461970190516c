"""torchrun worker for tests/test_curriculum.py: the real VLTrainer (HF Trainer + accelerate, gloo) on a toy model,
with a curriculum. It trains MAX_STEPS steps (checkpoints every 4), then trains again from the last checkpoint before
the end, as a resumed run would; each rank writes the dataset indices each run handed it, and the planned orders,
then leaves the process group explicitly (end_process_group).

    python -m torch.distributed.run --nproc_per_node 2 tests/curriculum_worker.py OUT MAX_STEPS
"""
import json
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.curriculum import build_plan  # noqa: E402
from medvl.families import get_family  # noqa: E402
from train.trainer import VLTrainer  # noqa: E402

N = 24


class Indexed(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.seen = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.seen.append(int(i))
        return {"idx": torch.tensor(i)}


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        return {"loss": ((self.w - idx.float().mean() / 100) ** 2).sum()}


def train(out: str, max_steps: int, resume: str | None):
    records = [{"id": f"r{i}", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                "meta": {"answer_type": "closed" if i % 3 == 0 else "open"}} for i in range(N)]
    args = TrainingArguments(output_dir=out, use_cpu=True, ddp_backend="gloo", per_device_train_batch_size=2,
                             max_steps=max_steps, save_strategy="steps", save_steps=4, report_to="none",
                             dataloader_num_workers=0, logging_steps=1, seed=0, remove_unused_columns=False,
                             learning_rate=0.1, disable_tqdm=True)
    ds = Indexed(N)
    trainer = VLTrainer(model=Toy(), args=args, train_dataset=ds,
                        data_collator=lambda b: {"idx": torch.stack([x["idx"] for x in b])},
                        family=get_family("qwen2_vl"), group_lrs={"llm": None},
                        curriculum=build_plan(records, "open_then_closed"))
    trainer.train(resume_from_checkpoint=resume)
    s = trainer.curriculum_sampler
    return {"seen": ds.seen, "world": args.world_size, "rank": args.process_index,
            "order": [s.epoch_order(e).tolist() for e in range(s.num_epochs)]}


def main(out: str, max_steps: int):
    first = train(out, max_steps, None)
    resume_at = (max_steps - 1) // 4 * 4
    resumed = train(out, max_steps, str(Path(out) / f"checkpoint-{resume_at}"))
    Path(out, f"rank{first['rank']}.json").write_text(json.dumps({"first": first, "resumed": resumed,
                                                                   "resume_at": resume_at}))
    end_process_group()


def end_process_group() -> None:
    """Both ranks reach this point with their files written, then the gloo group is torn down explicitly: left to
    interpreter exit, one rank's gloo threads could still be live while the other's exit closed the connection,
    and the process aborted ("terminate called without an active exception") after a successful run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
