"""Stage 3: GRPO with verifiable medical rewards (medvl/rewards.py), trained by TRL's GRPOTrainer.

    python -m train.finetune train/recipes/stage3.yaml train/recipes/gpu.yaml --model_name_or_path out/stage2_merged \
        --train_data train.json --eval_data val.json --output_dir out/stage3 [--rewards closed:1.0,format:0.2]

TRL runs the loop: sampling num_generations completions per prompt with HF generate (vLLM only if the user turns it
on in TRL), the group-normalised advantages, the clipped policy loss, the KL term against the starting model (--beta;
with a LoRA the reference is the same model with a frozen copy of the fresh adapter), logging. This module gives it
what the project owns, loaded as the other stages load it:

  * the model and processor from medvl.loading, the records validated by data_process (train.builder.load_splits),
    the stage's adapters from train.adapters (LoRA on the LLM by default: STAGE_PRESETS[3]);
  * `RecordPrompts`, the processing class TRL talks to: it renders and tokenizes prompts through medvl's VLProcessor
    (chat template, system prompt, image-token expansion, record text fenced), so a Stage-3 prompt is token for
    token the prompt `eval.generate` decodes from (tests/test_grpo.py checks it);
  * one reward function per reward of --rewards, weighted by TRL (reward_weights); a reward that does not apply to a
    record returns None, which TRL leaves out of the weighted sum (nansum) and out of that reward's logged mean;
  * VLTrainer's per-component learning-rate groups, read back at step 0 (GroupLRCheck), checkpoint manifests, resume.

TRL logs to the Trainer's report_to (TensorBoard by default): reward, rewards/<name>/mean, kl, completions/mean_length,
... . run_summary.json holds, beside what the other stages record, the mean held-out reward (the first
--gen_eval_samples records of --eval_data) at the start and at the end of the stage: of greedy answers (how evaluation
decodes) and of num_generations completions per record sampled as training samples (what GRPO raises; fixed seed).
Not applicable here: packing, chunked_loss, vision_cache (TRL computes the loss; gpu.yaml's are ignored, with a log
line), curriculum, early stopping.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
from transformers import BatchFeature, ProcessorMixin, TrainerCallback, TrainingArguments
import trl
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from medvl.collate import mm_token_type_ids
from medvl.encoding import VLProcessor
from medvl.families import ModelFamily
from medvl.generation import generate_records, greedy_generate
from medvl.rewards import score
from train.builder import GroupLRCheck, check_one_gpu_per_process, prepare_model, start_run
from train.checkpoints import ManifestOnSave
from train.config import DataArguments, ModelArguments, SpeedArguments, StageArguments, _zero_stage
from train.run_record import common_summary, finish_stage, resume_point
from train.trainer import VLTrainer

log = logging.getLogger("train.grpo")


# ------------------------------------------------------------------------------------------------ prompts
class RecordPrompts(ProcessorMixin):
    """The processing class TRL's GRPOTrainer calls (apply_chat_template, __call__, batch_decode, save_pretrained),
    answered by medvl's VLProcessor. ProcessorMixin is subclassed because TRL takes the vision path for processors
    only; its __init__ is not called (it would build its own tokenizer / image-processor attributes)."""

    def __init__(self, processor: VLProcessor):  # noqa: the parent's __init__ is not wanted (docstring)
        self.vl = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.chat_template = processor.tokenizer.chat_template

    def __repr__(self) -> str:
        return f"RecordPrompts({self.vl.family.name})"

    def _render(self, conversation: list[dict], add_generation_prompt: bool, continue_final_message: bool):
        """(template text, images in order) of one conversation whose image parts may carry their PIL image."""
        images, clean = [], []
        for m in conversation:
            content = m.get("content")
            if isinstance(content, list):
                images += [p["image"] for p in content if p.get("type") == "image" and "image" in p]
                m = dict(m, content=[{"type": "image"} if p.get("type") == "image" else p for p in content])
            clean.append(m)
        text = self.tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=continue_final_message)
        return text, images

    def _encode(self, texts: list[str], images: list[list], pad: bool) -> BatchFeature:
        """Token ids as VLProcessor.encode makes them (image slots expanded, fenced record text as plain text),
        pixels and grids of every image in order, mm_token_type_ids; left-padded tensors when `pad`."""
        ids, pixels, grids = [], [], []
        for text, imgs in zip(texts, images):
            grid = None
            if imgs:
                out = self.image_processor(images=list(imgs), return_tensors="pt")
                pixels.append(out["pixel_values"])
                grid = out["image_grid_thw"]
                grids.append(grid)
            ids.append(self.vl._tokenize(text, grid, None))
        data: dict = {}
        if pad:
            width = max(len(i) for i in ids)
            pad_id = self.vl.pad_token_id
            data["input_ids"] = torch.tensor([[pad_id] * (width - len(i)) + i for i in ids])
            data["attention_mask"] = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
            if grids:
                data["mm_token_type_ids"] = mm_token_type_ids(data["input_ids"], self.vl.image_token_id)
        else:
            data["input_ids"] = ids
            data["attention_mask"] = [[1] * len(i) for i in ids]
            if grids:
                data["mm_token_type_ids"] = [[int(t == self.vl.image_token_id) for t in i] for i in ids]
        if grids:
            data["pixel_values"] = torch.cat(pixels)
            data["image_grid_thw"] = torch.cat(grids)
        return BatchFeature(data)

    def apply_chat_template(self, conversation, chat_template=None, tools=None, tokenize: bool = False,
                            return_dict: bool = False, add_generation_prompt: bool = False,
                            continue_final_message: bool = False, **kwargs):
        if tools:
            raise ValueError("stage 3 trains without tools")
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        rendered = [self._render(c, add_generation_prompt, continue_final_message)
                    for c in (conversation if batched else [conversation])]
        if not tokenize:
            texts = [t for t, _ in rendered]
            return texts if batched else texts[0]
        return self._encode([t for t, _ in rendered], [i for _, i in rendered], pad=False)

    def __call__(self, images=None, text=None, padding=True, return_tensors="pt", **kwargs) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text)
        per_sample = images if images is not None else [[] for _ in texts]
        return self._encode(texts, [list(i or []) for i in per_sample], pad=True)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        self.tokenizer.save_pretrained(save_directory)
        self.image_processor.save_pretrained(save_directory)
        return [str(save_directory)]


class GRPORecords:
    """Validated records as TRL's rows: the prompt messages (medvl/prompt.py, no answer), the images, and what the
    rewards read (the record, its first image's original and model-input size). Rows are built when read."""

    def __init__(self, records: list[dict], processor: VLProcessor):
        self.records, self.processor = records, processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec, p = self.records[i], self.processor
        images = p.load_images(rec)
        # the model-input size decides box coordinates of json_abs families (Qwen2.5-VL)
        _, _, sizes, input_sizes = p.process_images(rec, images)
        return {"prompt": p.messages(rec, include_answer=False, image_sizes=sizes, input_sizes=input_sizes),
                "images": images, "record": rec, "image_size": sizes[0] if sizes else None,
                "input_size": input_sizes[0] if input_sizes else None}

    def as_dataset(self) -> Dataset:
        """A datasets.Dataset (what GRPOTrainer takes) of row numbers whose transform builds each row on access:
        images, nested meta and messages never go through Arrow."""
        def rows(batch: dict) -> dict:
            built = [self[i] for i in batch["row"]]
            return {k: [b[k] for b in built] for k in built[0]} if built else {}
        return Dataset.from_dict({"row": list(range(len(self)))}).with_transform(rows)


# ------------------------------------------------------------------------------------------------ rewards
def completion_text(completion) -> str:
    """TRL passes conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content


class RecordReward:
    """One reward of medvl.rewards as a TRL reward function; None where it does not apply to the record."""

    def __init__(self, name: str, family: ModelFamily):
        self.name, self.family = name, family
        self.__name__ = name  # TRL names the logged metric rewards/<__name__>/mean

    def __call__(self, prompts, completions, record, image_size, input_size, **kwargs) -> list[float | None]:
        return [score(self.name, completion_text(c), r, self.family, s, i)
                for c, r, s, i in zip(completions, record, image_size, input_size)]


def weighted_means(completions: list[str], rows: list[dict], weights: dict[str, float], family: ModelFamily) -> dict:
    """Each reward's mean over the records it applies to, and the mean weighted sum (TRL's total reward)."""
    per = {name: [score(name, c, row["record"], family, row["image_size"], row["input_size"])
                  for c, row in zip(completions, rows)] for name in weights}
    out = {name: (sum(v for v in vals if v is not None) / n if (n := sum(v is not None for v in vals)) else None)
           for name, vals in per.items()}
    out["reward"] = sum(sum(w * (per[name][k] or 0.0) for name, w in weights.items())
                        for k in range(len(rows))) / len(rows)
    return out


def sampled_completions(model, processor: VLProcessor, records: list[dict], generation_config, n: int,
                        batch_size: int, synced_gpus: bool = False) -> list[str]:
    """n completions per record (record-major) sampled as training samples them (TRL's generation config)."""
    config = copy.deepcopy(generation_config)
    config.num_return_sequences = n
    return generate_records(model, processor, records, batch_size, generation_config=config, synced_gpus=synced_gpus)


@torch.no_grad()
def heldout_reward(model, processor: VLProcessor, dataset: GRPORecords, weights: dict[str, float],
                   family: ModelFamily, generation_config, n: int, batch_size: int, seed: int,
                   synced_gpus: bool = False) -> dict:
    """The mean rewards on held-out records, eval mode (no dropout): of greedy answers (how evaluation decodes) and
    of n sampled completions per record (what GRPO raises), sampled from a fixed seed that leaves the run's random
    state as it was."""
    was_training = model.training
    model.eval()
    rows = [dataset[i] for i in range(len(dataset))]
    try:
        greedy = greedy_generate(model, processor, dataset.records, batch_size, generation_config.max_new_tokens,
                                 synced_gpus=synced_gpus)
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            torch.manual_seed(seed)
            sampled = sampled_completions(model, processor, dataset.records, generation_config, n, batch_size,
                                          synced_gpus=synced_gpus)
    finally:
        model.train(was_training)
    return {"n": len(rows), "greedy": weighted_means(greedy, rows, weights, family),
            "sampled": weighted_means(sampled, [r for r in rows for _ in range(n)], weights, family),
            "samples_per_record": n}


# ------------------------------------------------------------------------------------------------ trainer
class MedGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with VLTrainer's per-component learning-rate groups (the same methods, so the optimizer
    and GroupLRCheck behave as in stages 1 and 2)."""
    create_optimizer = VLTrainer.create_optimizer
    expected_group_lrs = VLTrainer.expected_group_lrs
    optimizer_group_lrs = VLTrainer.optimizer_group_lrs
    optimizer_name = VLTrainer.optimizer_name

    def __init__(self, *args, family: ModelFamily, group_lrs: dict, **kwargs):
        self.family, self.group_lrs = family, group_lrs
        super().__init__(*args, **kwargs)


def grpo_config(targs, sargs: StageArguments) -> GRPOConfig:
    """GRPOConfig from the parsed TrainArguments (every TrainingArguments field as parsed: the project's defaults
    and recipes win over GRPOConfig's own) plus the stage's GRPO fields."""
    base = {f.name: getattr(targs, f.name) for f in dataclasses.fields(TrainingArguments)
            if f.init and hasattr(targs, f.name)}
    weights = sargs.reward_weights
    return GRPOConfig(**base, num_generations=sargs.num_generations, max_completion_length=sargs.max_completion_length,
                      beta=sargs.beta, reward_weights=list(weights.values()))


def check_stage3(dargs: DataArguments, sargs: StageArguments, targs, fargs: SpeedArguments | None) -> None:
    """Refuse what Stage 3 cannot do, before anything loads."""
    check_one_gpu_per_process(targs.n_gpu)
    if dargs.curriculum != "none":
        raise ValueError(f"--curriculum {dargs.curriculum} does not apply to --stage 3 (TRL samples the prompts)")
    if sargs.early_stopping_patience:
        raise ValueError("--early_stopping_patience does not apply to --stage 3")
    world = max(int(targs.world_size), 1)
    per_step = targs.per_device_train_batch_size * targs.gradient_accumulation_steps * world
    if per_step % sargs.num_generations:
        raise ValueError(f"--per_device_train_batch_size x --gradient_accumulation_steps x processes = {per_step} "
                         f"completions per step must be a multiple of --num_generations {sargs.num_generations}")


def build(margs: ModelArguments, dargs: DataArguments, sargs: StageArguments, targs,
          fargs: SpeedArguments | None = None, callbacks: tuple = ()):
    """(trainer, model, processor, family, splits, reports, lr_check) for one Stage-3 run (run() has checked the
    arguments with check_stage3 before)."""
    # every speed option set away from its default: TRL's loop uses none of them
    ignored = [f.name for f in dataclasses.fields(SpeedArguments)
               if fargs is not None and getattr(fargs, f.name) != f.default]
    if ignored and targs.process_index == 0:  # gpu.yaml turns them on for every stage
        log.info("stage 3: %s ignored (TRL computes the GRPO loss)", ", ".join(ignored))
    model, processor, family, splits, reports = start_run(margs, dargs, sargs, targs)  # as stages 1-2 start
    model, _ = prepare_model(model, family, sargs, targs)
    config = grpo_config(targs, sargs)
    lr_check = GroupLRCheck()
    with_eval = "eval" in splits and config.eval_strategy != "no"
    trainer = MedGRPOTrainer(
        model=model, reward_funcs=[RecordReward(n, family) for n in sargs.reward_weights], args=config,
        train_dataset=GRPORecords(splits["train"], processor).as_dataset(),
        eval_dataset=GRPORecords(splits["eval"], processor).as_dataset() if with_eval else None,
        processing_class=RecordPrompts(processor), callbacks=[lr_check, ManifestOnSave(), *callbacks],
        family=family, group_lrs={"merger": sargs.merger_lr, "llm": sargs.llm_lr, "vision": sargs.vision_lr})
    lr_check.trainer = trainer
    return trainer, trainer.model, processor, family, splits, reports, lr_check


def run(margs: ModelArguments, dargs: DataArguments, sargs: StageArguments, targs,
        fargs: SpeedArguments | None = None, callbacks: tuple = ()) -> dict:
    """Build, measure the held-out reward, train, measure again, save the adapter and run_summary.json."""
    try:
        check_stage3(dargs, sargs, targs, fargs)
    except ValueError as e:  # a command-line mistake: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
    trainer, model, processor, family, splits, reports, lr_check = build(margs, dargs, sargs, targs, fargs, callbacks)
    out = Path(targs.output_dir)
    weights = sargs.reward_weights
    heldout = None
    if "eval" in splits and dargs.gen_eval_samples > 0:
        heldout = GRPORecords(splits["eval"][: dargs.gen_eval_samples], processor)
    measure = (lambda: heldout_reward(model, processor, heldout, weights, family, trainer.generation_config,
                                      sargs.num_generations, targs.per_device_eval_batch_size, targs.seed,
                                      synced_gpus=_zero_stage(targs) == 3))
    resume = resume_point(sargs, targs)
    # a resumed run is past the start of the stage: no start value then (the interrupted run wrote none)
    start = MeasureAtStart(measure) if heldout is not None and resume is None else None
    if start is not None:
        trainer.add_callback(start)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.time() - t0 - (start.seconds if start is not None else 0.0)
    end = measure() if heldout is not None else None
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")  # TRL's frozen copy of the fresh adapter (the KL reference): not a result
    trainer.save_model(str(out))
    steps = max(trainer.state.global_step, 1)
    summary = {
        **common_summary(margs, dargs, sargs, targs, fargs, trainer, family, train_seconds=train_seconds,
                         train_metrics=result.metrics, lr_check=lr_check, reports=reports, resume=resume),
        "seconds_per_step": round(train_seconds / steps, 3), "rewards": weights,
        "grpo": {"num_generations": sargs.num_generations, "max_completion_length": sargs.max_completion_length,
                 "beta": sargs.beta, "trl": trl.__version__},
        "heldout_reward": {"start": start and start.value, "end": end} if heldout is not None else None,
        "train_log": [h for h in trainer.state.log_history if "reward" in h],
    }
    finish_stage(trainer, processor, targs, sargs.stage, _finite(summary))
    return summary


class MeasureAtStart(TrainerCallback):
    """The held-out reward at step 0, taken once the Trainer has wrapped the model: under ZeRO-3 the weights are
    partitioned from loading on, and only DeepSpeed's engine gathers them for a forward (a generate before
    trainer.train() fails in the ViT's first conv). Its time is not training time."""

    def __init__(self, measure):
        self.measure, self.value, self.seconds = measure, None, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        t0 = time.time()
        self.value = self.measure()
        self.seconds = time.time() - t0


def _finite(obj):
    """NaN (TRL logs a std of NaN for a one-sample group) as None: run_summary.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
