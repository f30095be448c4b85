"""The text tokenizer gives the ids upstream's transformers-4.53 tokenizer gave."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from runners.models.store import LLM_DIR
from runners.models.tokenizers.text_tokenizer import TextTokenizer
from runners.models.tokenizers.tokens import LLM_AUDIO_OFFSET, to_llm_ids, to_token_string

PARITY = Path(__file__).resolve().parents[2] / "data" / "parity" / "step1_tokenizer_ids.json"


@pytest.fixture(scope="module")
def llm_dir(tiny_root: Path) -> Path:
    return tiny_root / LLM_DIR


@pytest.fixture(scope="module")
def tokenizer(llm_dir: Path) -> TextTokenizer:
    return TextTokenizer(llm_dir)


def test_special_ids_match_the_official_layout(tokenizer: TextTokenizer) -> None:
    assert (tokenizer.bos_id, tokenizer.eot_id, tokenizer.bot_id) == (1, 3, 4)
    assert tokenizer.eos_id == 3  # Step1 stops on <|EOT|> (config.json eos_token_id)
    assert tokenizer.encode("<|BOT|>") == [4]
    assert tokenizer.encode("<|EOT|>") == [3]
    assert tokenizer.id_to_token(78) == "<0x0A>"
    assert tokenizer.vocab_size == 74752


def test_encode_adds_no_bos_and_prefixes_space_only_at_the_start(tokenizer: TextTokenizer) -> None:
    ids = tokenizer.encode("human\n")
    assert ids[0] != tokenizer.bos_id
    assert ids[-1] == 78  # "\n" through byte fallback
    assert tokenizer.id_to_token(ids[0]).startswith("▁")
    # text right after an added token gets no ▁ (non-legacy spacing)
    after_audio = tokenizer.encode("<audio_1>\n")
    assert after_audio == [LLM_AUDIO_OFFSET + 1, 78]


def test_audio_token_strings_map_to_llm_ids(tokenizer: TextTokenizer) -> None:
    codes = [0, 1, 1023, 1024, 4000, 5119, 7, 7, 7]
    assert tokenizer.encode(to_token_string(codes)) == to_llm_ids(codes)
    mixed = tokenizer.encode("a" + to_token_string([5, 6]) + "b")
    assert mixed[1:3] == [LLM_AUDIO_OFFSET + 5, LLM_AUDIO_OFFSET + 6]


def test_thousands_of_audio_tokens_encode_in_milliseconds(tokenizer: TextTokenizer) -> None:
    codes = [i % 5120 for i in range(6000)]
    text = "speaker audio tokens:\n" + to_token_string(codes) + "\n"
    started = time.perf_counter()
    ids = tokenizer.encode(text)
    elapsed = time.perf_counter() - started
    assert ids[-6001:-1] == to_llm_ids(codes)
    assert elapsed < 0.5, f"encoding 6000 audio tokens took {elapsed:.3f}s"


def test_target_text_slice_drops_the_leading_space_piece(tokenizer: TextTokenizer) -> None:
    # upstream's clone prompt: encode("\n" + text) minus the tokens of encode("\n")
    prefix = tokenizer.encode("\n")
    target = tokenizer.encode("\nHello world")[len(prefix) :]
    assert tokenizer.decode(target) == "Hello world"
    assert not tokenizer.id_to_token(target[0]).startswith("▁")


def test_decode_round_trips_english_and_bytes(tokenizer: TextTokenizer) -> None:
    for text in ["The quick brown fox jumps over the lazy dog.", "naïve café 你好\nsecond line"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_tiny_tokenizer_files_have_the_official_shape(llm_dir: Path, tokenizer: TextTokenizer) -> None:
    config = json.loads((llm_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizer"
    assert len(config["added_tokens_decoder"]) == 9284
    assert tokenizer.id_to_token(LLM_AUDIO_OFFSET) == "<audio_0>"
    assert tokenizer.id_to_token(LLM_AUDIO_OFFSET + 5119) == "<audio_5119>"


@pytest.mark.parametrize("flags", ["official_flags", "legacy_default_flags"])
def test_ids_equal_transformers_4_53(llm_dir: Path, tmp_path: Path, flags: str) -> None:
    """Recorded with transformers 4.53.3 AutoTokenizer on the same tiny files (see parity README)."""
    record = json.loads(PARITY.read_text())
    folder = llm_dir
    if flags == "legacy_default_flags":  # same files, tokenizer_config without legacy/add_bos_token keys
        folder = tmp_path / "legacy"
        folder.mkdir()
        shutil.copy(llm_dir / "tokenizer.model", folder / "tokenizer.model")
        config = json.loads((llm_dir / "tokenizer_config.json").read_text())
        config.pop("legacy")
        config.pop("add_bos_token")
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = TextTokenizer(folder)
    expected = record["ids"][flags]["encode"]
    assert [tokenizer.encode(t) for t in record["texts"]] == expected
