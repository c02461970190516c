"""The training-modes benchmark's CPU smoke mode runs the three variants through the product path on the tiny model."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_train_modes_tiny(tmp_path):
    pytest.importorskip("bitsandbytes")
    from bench.train_modes import main

    main(["--tiny", "--out", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    runs = {x["variant"]: x for x in r["runs"]}
    assert set(runs) == {"bf16_lora", "qlora_4bit", "qlora_4bit_adamw8bit"} and not r["skipped"]
    assert runs["qlora_4bit_adamw8bit"]["optimizer"].startswith("bitsandbytes.")
    assert all(len(x["losses"]) == 3 and x["tokens_per_s"] > 0 for x in runs.values())
    # same seed, same base: both QLoRA variants start from the same loss; the 16-bit base gives another one
    assert runs["qlora_4bit"]["losses"][0] == runs["qlora_4bit_adamw8bit"]["losses"][0]
    assert runs["bf16_lora"]["losses"][0] != runs["qlora_4bit"]["losses"][0]
