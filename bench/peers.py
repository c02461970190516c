"""The tools a user would pick instead of this project, built the way their documentation says, for
bench/train_throughput.py: same records, same weights, same LoRA, timed by the same step wrapper.

- "trl": TRL's SFTTrainer with its vision-language setup: a dataset of {"images": [...], "messages": [...]},
  the processor as processing_class, a PEFT LoraConfig, SFTConfig(max_length=None) so image tokens are never cut;
  SFTConfig's default gradient checkpointing (on). TRL refuses packing and padding-free for vision data, so batches are
  right-padded. Its loss covers every non-padding token (system + prompt + image tokens + answer) unless the dataset is
  prompt/completion (completion-only loss): `loss_check` reports both against this project's answer-only loss.
- "trl_liger": the same with SFTConfig(use_liger_kernel=True) (liger-kernel's RMSNorm / SwiGLU / RoPE for Qwen2-VL,
  applied by the Trainer; TRL 1.16 keeps its own chunked LM-head loss and turns liger's fused cross-entropy off).
- "trl_liger_nogc": liger with gradient checkpointing off (the speed liger's docs advertise its memory savings for).
- "unsloth": Unsloth's FastVisionModel set up as its vision fine-tuning notebooks do (16-bit LoRA on the language
  model's attention + MLP through get_peft_model's finetune_* switches, UnslothVisionDataCollator, TRL SFTTrainer with
  skip_prepare_dataset), with its own gradient checkpointing (use_gradient_checkpointing="unsloth").
  "unsloth_nogc": the same with gradient checkpointing off. Unsloth loads from a path, so the random weights are saved
  first (bench/random_checkpoint.build, same seed: the same weights as the other variants) and loaded offline.
  Unsloth needs trl <= 1.15 and a CUDA GPU; its child process runs with the package set of scripts/unsloth_wheels.sh
  first on PYTHONPATH (bench/unsloth_child.py imports unsloth before transformers, so its patches apply).

trl, datasets, liger-kernel and unsloth are imported inside the functions (heavy optional packages, not project
dependencies: the GPU run carries them as wheels).
"""
from __future__ import annotations

import torch

# name -> (use_liger_kernel, gradient_checkpointing)
PEERS = {
    "trl": (False, True),
    "trl_liger": (True, True),
    "trl_liger_nogc": (True, False),
    "unsloth": (False, "unsloth"),  # Unsloth's own (offloaded) gradient checkpointing
    "unsloth_nogc": (False, False),
}
UNSLOTH = {"unsloth", "unsloth_nogc"}


def hf_processor(tokenizer, image_processor):
    """The transformers processor a user loads with AutoProcessor, built from the same tokenizer and image
    processor as this project's (same pixel budget, same chat template)."""
    from transformers import Qwen2VLProcessor

    try:
        return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=tokenizer.chat_template)
    except (TypeError, ValueError):  # a transformers that insists on a video processor
        from transformers import Qwen2VLVideoProcessor
        return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=Qwen2VLVideoProcessor(), chat_template=tokenizer.chat_template)
    except AttributeError:  # no usable torchvision (CPU CI): the video-processor class check cannot run
        class ImageOnlyProcessor(Qwen2VLProcessor):
            """Qwen2VLProcessor without a video processor: images and text go through the stock code."""
            def check_argument_for_proper_class(self, name, arg):
                return None if name == "video_processor" and arg is None else \
                    super().check_argument_for_proper_class(name, arg)
        return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                  chat_template=tokenizer.chat_template)


def _question_answer(rec: dict) -> tuple[str, str]:
    conv = rec["conversations"]
    return conv[0]["value"].replace("<image>\n", "").replace("<image>", "").strip(), conv[-1]["value"]


def peer_dataset(records: list[dict], completion_only: bool = False):
    """A datasets.Dataset as TRL's VLM examples use: images decoded lazily by the Image feature (from paths),
    conversational "messages" (or "prompt" / "completion" for TRL's completion-only loss)."""
    import datasets  # heavy optional: only the peer runs need it

    rows = {"images": [[r["image"]] for r in records]}
    qa = [_question_answer(r) for r in records]
    if completion_only:
        rows["prompt"] = [[{"role": "user", "content": q}] for q, _ in qa]
        rows["completion"] = [[{"role": "assistant", "content": a}] for _, a in qa]
    else:
        rows["messages"] = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in qa]
    return datasets.Dataset.from_dict(rows).cast_column("images", datasets.Sequence(datasets.Image()))


def trainable_summary(model) -> dict:
    """Trainable parameters and LoRA-wrapped modules: every variant must train the same set."""
    from peft.tuners.lora import LoraLayer

    return {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "lora_modules": sum(isinstance(m, LoraLayer) for m in model.modules())}


def build_trl_trainer(name: str, model, tokenizer, image_processor, records, targets: list[str], targs: dict,
                      trainer_cls_wrapper, lora_dropout: float = 0.05):
    """An SFTTrainer for peer `name` over `records`; targs are the shared TrainingArguments values."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer  # heavy optional: only the peer runs need it

    liger, gc = PEERS[name]
    processor = hf_processor(tokenizer, image_processor)
    cfg = SFTConfig(max_length=None, gradient_checkpointing=gc, use_liger_kernel=liger, **targs)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=lora_dropout, target_modules=targets)
    trainer = trainer_cls_wrapper(SFTTrainer)(model=model, args=cfg, train_dataset=peer_dataset(records),
                                              processing_class=processor, peft_config=peft_config)
    return trainer, processor


def loss_check(trainer, processor, records: list[dict]) -> dict:
    """TRL's loss on the first 8 records (eval mode, no grad), as it trains (all non-padding tokens) and with its
    completion-only collator (answer tokens only, like this project's loss)."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    model = trainer.model
    dev = next(model.parameters()).device
    out = {}
    was_training = model.training
    model.eval()
    for key, completion_only in (("loss_all_tokens", False), ("loss_completion_only", True)):
        ds = peer_dataset(records[:8], completion_only=completion_only)
        col = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=completion_only)
        batch = col([dict(ds[i]) for i in range(len(ds))])
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).dtype)
        with torch.no_grad():
            out[key] = float(trainer.compute_loss(model, batch))
        out[key.replace("loss", "label_tokens")] = int((batch["labels"] != -100).sum())
    model.train(was_training)
    return out


def unsloth_dataset(records: list[dict], completion_only: bool = False) -> list[dict]:
    """Rows as Unsloth's vision notebooks build them (a list of {"messages": ...} with typed content; the image as a
    path in an "images" column, which the collator opens without resizing), or prompt / completion rows, which its
    collator trains on the completion only."""
    rows = []
    for r in records:
        q, a = _question_answer(r)
        user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
        answer = [{"role": "assistant", "content": [{"type": "text", "text": a}]}]
        rows.append({"images": [r["image"]], **({"prompt": user, "completion": answer} if completion_only
                                                 else {"messages": user + answer})})
    return rows


def build_unsloth_trainer(name: str, checkpoint: str, records, targets: list[str], targs: dict, trainer_cls_wrapper,
                          lora_dropout: float = 0.05, max_seq_length: int = 4096):
    """(trainer, collator factory, FastVisionModel) for Unsloth peer `name`, the model loaded from `checkpoint`.
    `targets` are this project's LoRA modules: Unsloth picks its own from the finetune_* switches, so the pick is
    compared with them (the run reports both; they must be equal for the row to count)."""
    from unsloth import FastVisionModel  # heavy optional, before trl: Unsloth patches SFTTrainer on import
    from unsloth.trainer import UnslothVisionDataCollator
    from trl import SFTConfig, SFTTrainer

    gc = PEERS[name][1]
    model, processor = FastVisionModel.from_pretrained(
        checkpoint, max_seq_length=max_seq_length, dtype=torch.bfloat16, load_in_4bit=False, load_in_8bit=False,
        load_in_16bit=True, use_gradient_checkpointing=gc, use_exact_model_name=True)
    model = FastVisionModel.get_peft_model(
        model, finetune_vision_layers=False, finetune_language_layers=True, finetune_attention_modules=True,
        finetune_mlp_modules=True, r=16, lora_alpha=32, lora_dropout=lora_dropout, bias="none", random_state=3407,
        use_rslora=False, loftq_config=None, use_gradient_checkpointing=gc)
    FastVisionModel.for_training(model, use_gradient_checkpointing=gc)

    def collator(**kw):
        # resize="max": the records' own image sizes (the default "min" shrinks Qwen2-VL images to 512 px a side,
        # fewer image tokens than the other variants see)
        return UnslothVisionDataCollator(model, processor, max_seq_length=max_seq_length, resize="max", **kw)
    cfg = SFTConfig(gradient_checkpointing=bool(gc), remove_unused_columns=False, dataset_text_field="",
                    dataset_kwargs={"skip_prepare_dataset": True}, max_length=max_seq_length, **targs)
    trainer = trainer_cls_wrapper(SFTTrainer)(model=model, processing_class=processor, data_collator=collator(),
                                              train_dataset=unsloth_dataset(records), args=cfg)
    trainer.lora_target_check = lora_target_check(model, targets)
    return trainer, collator, FastVisionModel


def lora_target_check(model, targets: list[str]) -> dict:
    """Do the LoRA-wrapped modules name exactly `targets` (this project's pick)? Names are compared without PEFT's
    wrapper prefixes."""
    from peft.tuners.lora import LoraLayer

    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}

    def core(n):  # from "layers." on, which both namings share: "layers.3.self_attn.q_proj"
        return n[n.index("layers."):] if "layers." in n else n
    ours, theirs = {core(t) for t in targets}, {core(n) for n in wrapped}
    return {"same_modules_as_ours": ours == theirs, "only_unsloth": sorted(theirs - ours)[:5],
            "only_ours": sorted(ours - theirs)[:5]}


def unsloth_loss_check(trainer, collator, fast_model, records: list[dict], gradient_checkpointing) -> dict:
    """The Unsloth peer's loss on the first 8 records (eval mode, no grad), with its collator on the notebook rows
    (every non-padding, non-image token) and on prompt / completion rows (answer tokens only)."""
    model = trainer.model
    dev = next(model.parameters()).device
    out = {}
    model.eval()
    for key, completion_only in (("loss_all_tokens", False), ("loss_completion_only", True)):
        batch = collator()(unsloth_dataset(records[:8], completion_only=completion_only))
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        with torch.no_grad():
            out[key] = float(trainer.compute_loss(model, batch))
        out[key.replace("loss", "label_tokens")] = int((batch["labels"] != -100).sum())
    fast_model.for_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return out
