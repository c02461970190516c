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

trl, datasets and liger-kernel are imported inside the functions (heavy optional packages, not project
dependencies: the GPU run carries them as wheels).
"""
from __future__ import annotations

import torch

# name -> (use_liger_kernel, gradient_checkpointing)
PEERS = {
    "trl": (False, True),
    "trl_liger": (True, True),
    "trl_liger_nogc": (True, False),
}


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
