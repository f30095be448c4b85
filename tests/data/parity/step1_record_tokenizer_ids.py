"""Record step1_tokenizer_ids.json: transformers 4.53.3 AutoTokenizer ids on the tiny tokenizer files.

    pip install --target /tmp/ref-step1 transformers==4.53.3 "tokenizers<0.22" "huggingface-hub<1"
    PYTHONPATH=/tmp/ref-step1:. .venv/bin/python tests/data/parity/step1_record_tokenizer_ids.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXTS = [
    "system\nMake the following audio more happy.",
    "human\n",
    "assistant\n",
    "\n",
    "\nHello world",
    "  two  spaces ",
    "a<audio_3><audio_4>\nb <audio_5> c\n",
    "<|BOT|>x<|EOT|>",
    "héllo ünïcode 你好 🎵",
    "Make the following audio more angry. The text corresponding to the audio is: hi\n<audio_1><audio_1029>\n",
    "",
    "<audio_5119><audio_0>",
    "speaker prompt text:\nThe birch canoe slid on the smooth planks.\n",
]


def main() -> None:
    import transformers
    from transformers import AutoTokenizer

    from runners.models.tiny import build_tiny_model_root

    assert transformers.__version__.startswith("4."), transformers.__version__
    out: dict[str, object] = {"transformers": transformers.__version__, "texts": TEXTS, "ids": {}}
    with tempfile.TemporaryDirectory() as tmp:
        official = build_tiny_model_root(Path(tmp) / "root", seed=0, parts={"step1"}) / "Step-Audio-EditX"
        legacy = Path(tmp) / "legacy"
        legacy.mkdir()
        shutil.copy(official / "tokenizer.model", legacy / "tokenizer.model")
        config = json.loads((official / "tokenizer_config.json").read_text())
        config.pop("legacy")
        config.pop("add_bos_token")
        (legacy / "tokenizer_config.json").write_text(json.dumps(config))
        for name, folder in (("official_flags", official), ("legacy_default_flags", legacy)):
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            out["ids"][name] = {"class": type(tok).__name__, "encode": [tok.encode(t) for t in TEXTS]}  # type: ignore[index]
    (HERE / "step1_tokenizer_ids.json").write_text(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
