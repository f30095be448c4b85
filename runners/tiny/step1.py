"""A tiny random Step1 checkpoint and text tokenizer in the official file layout.

Writes, for one seed and byte for byte the same every time:
- ``config.json`` in the official form (model_type step1, auto_map, torch_dtype
  bfloat16, the official vocab size and special ids) with small dimensions;
- ``model-00001.safetensors`` (bf16, the official key names) and its
  ``model.safetensors.index.json``;
- ``tokenizer.model``: a sentencepiece Unigram model with byte fallback trained
  here on a few English sentences, then laid out like the official one: the
  special pieces at ids 0..67, byte pieces ``<0x00>..<0xFF>`` at 68..323 (so
  "\\n" is 78), the learned pieces after them, filler up to 65535,
  ``<audio_0..5119>`` at 65536..70655 and reserved pieces up to 74751;
- ``tokenizer_config.json`` naming LlamaTokenizer, with every id from 0..67
  and 65536..74751 declared as an added token (9 284 of them, as upstream has);
  with ``chat_template=True`` it also carries a chat template in the 2026 release's
  layout (:data:`RELEASE_2026_CHAT_TEMPLATE`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from sentencepiece import sentencepiece_model_pb2 as sp_pb

from runners.step1.configuration import OFFICIAL_CONFIG, expected_state_shapes
from runners.tokens import CODEC_VOCAB, LLM_AUDIO_OFFSET

TINY_DIMS: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 8,
    "num_attention_groups": 2,
    "num_hidden_layers": 2,
}
WEIGHTS_FILE = "model-00001.safetensors"
SPECIAL_PIECES = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "<|EOT|>", 4: "<|BOT|>"}
FIRST_BYTE_ID = 68  # official: "\n" (0x0A) is id 78
TEXT_VOCAB_END = LLM_AUDIO_OFFSET  # ids below this are text pieces
_LEARNED_VOCAB = 700

_Piece = sp_pb.ModelProto.SentencePiece

# A chat template giving the prompt text the 2026 release's checkpoint template gives, as far as
# public sources show: ``<s>`` before a leading system turn; every turn ``<|BOT|>``, a space, the
# role (``user`` is called ``human``), a newline, the text, ``<|EOT|>`` (left open only for a final
# assistant turn); the generation prompt ``<|BOT|> assistant`` and a newline.
RELEASE_2026_CHAT_TEMPLATE = (
    "{%- if messages and messages[0].role == 'system' -%}{{ bos_token }}{%- endif -%}"
    "{%- for turn in messages -%}"
    "{%- set speaker = 'human' if turn.role == 'user' else turn.role -%}"
    "{{ '<|BOT|> ' ~ speaker ~ '\\n' ~ turn.content }}"
    "{%- if not (loop.last and turn.role == 'assistant') -%}{{ '<|EOT|>' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|BOT|> assistant\\n' }}{%- endif -%}"
)

# Text the tiny tokenizer learns its pieces from: the words of the prompt
# templates plus everyday English, so encoding real prompts is exercised.
_CORPUS = """\
system
human
assistant
Generate audio with the following timbre, prosody and speaking style.
speaker name: clone_0123456789abcdef
speaker prompt text:
speaker audio tokens:
As a highly skilled audio editing and tuning specialist, you interpret instructions and apply precise adjustments.
Emotional Enhancement. Speaking Style Transfer. Non-linguistic Adjustments. Audio Tuning and Editing.
Note: You will receive instructions in natural language.
Make the following audio more happy. The text corresponding to the audio is: hello there.
Make the following audio more whisper style. The text corresponding to the audio is: good morning.
Remove any emotion in the following audio and the reference text is: thank you very much.
Remove any noise from the given audio while preserving the voice content clearly.
Remove any silent portions from the given audio while preserving the voice content clearly.
Add some non-verbal sounds to make the audio more natural, the new text is : Great [Laughter], the weather is so nice today.
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
She sells sea shells by the sea shore. How much wood would a woodchuck chuck if a woodchuck could chuck wood?
We hold these truths to be self-evident, that all people are created equal.
It was the best of times, it was the worst of times, it was the age of wisdom.
Please call Stella and ask her to bring these things with her from the store.
Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.
The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.
It is easy to tell the depth of a well. These days a chicken leg is a rare dish.
Rice is often served in round bowls. The juice of lemons makes fine punch.
The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage.
Four hours of steady work faced us. A large size in stockings is hard to sell.
Numbers like 1, 2, 3, 42 and 2025 appear too; so do commas, periods and question marks?
"""


def tiny_config_dict(official_size: bool = False) -> dict[str, Any]:
    """config.json of the tiny model: the official fields, small dimensions (or the official ones)."""
    dims = {name: OFFICIAL_CONFIG[name] for name in TINY_DIMS} if official_size else TINY_DIMS
    return {
        "architectures": ["Step1ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_step1.Step1Config",
            "AutoModelForCausalLM": "modeling_step1.Step1ForCausalLM",
        },
        "model_type": "step1",
        **dims,
        "max_seq_len": OFFICIAL_CONFIG["max_seq_len"],
        "vocab_size": OFFICIAL_CONFIG["vocab_size"],
        "rms_norm_eps": OFFICIAL_CONFIG["rms_norm_eps"],
        "bos_token_id": OFFICIAL_CONFIG["bos_token_id"],
        "eos_token_id": OFFICIAL_CONFIG["eos_token_id"],
        "pad_token_id": OFFICIAL_CONFIG["pad_token_id"],
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def _random_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic weights: norms near 1, matrices N(0, 0.02²)-ish, drawn in a fixed order."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in expected_state_shapes(config).items():
        if name.endswith("norm.weight"):
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            value = 0.5 * torch.randn(shape, generator=gen)
        else:
            value = torch.randn(shape, generator=gen) / (shape[-1] ** 0.5)
        tensors[name] = value.to(torch.bfloat16).contiguous()
    return tensors


def _special_name(i: int) -> str:
    return SPECIAL_PIECES.get(i, f"<|reserved_{i}|>")


def _added_name(i: int) -> str:
    if i < LLM_AUDIO_OFFSET + CODEC_VOCAB:
        return f"<audio_{i - LLM_AUDIO_OFFSET}>"
    return f"<|reserved_{i}|>"


def build_tokenizer_model(vocab_size: int = OFFICIAL_CONFIG["vocab_size"]) -> bytes:
    """Serialized sentencepiece ModelProto with the official id layout (deterministic)."""
    trained = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines()),
        model_writer=trained,
        model_type="unigram",
        vocab_size=_LEARNED_VOCAB,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        seed_sentencepiece_size=100000,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    source = sp_pb.ModelProto()
    source.ParseFromString(trained.getvalue())
    learned = [p for p in source.pieces if p.type == _Piece.NORMAL]

    model = sp_pb.ModelProto()
    model.CopyFrom(source)
    del model.pieces[:]

    def add(piece: str, score: float, kind: int) -> None:
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind

    for i in range(FIRST_BYTE_ID):
        kind = _Piece.UNKNOWN if i == 0 else _Piece.CONTROL
        add(_special_name(i), 0.0, kind)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, _Piece.BYTE)
    for p in learned:
        add(p.piece, p.score, _Piece.NORMAL)
    lowest = min(p.score for p in learned)
    # Filler keeps the text ids up to 65535 occupied; strings no text will contain.
    for i in range(len(model.pieces), TEXT_VOCAB_END):
        add(f"<|filler_{i}|>", lowest - 10.0, _Piece.UNUSED)
    for i in range(TEXT_VOCAB_END, vocab_size):
        add(_added_name(i), 0.0, _Piece.USER_DEFINED)
    if len(model.pieces) != vocab_size:
        raise AssertionError(f"tokenizer has {len(model.pieces)} pieces, wanted {vocab_size}")
    return model.SerializeToString()


def tokenizer_config_dict(vocab_size: int = OFFICIAL_CONFIG["vocab_size"], chat_template: bool = False
                          ) -> dict[str, Any]:
    """tokenizer_config.json: LlamaTokenizer, no automatic BOS/EOS, non-legacy spacing.

    These flag values are what the official prompts imply (see
    runners/text_tokenizer.py for the evidence); every id of 0..67 and of
    65536.. is an added token that matches verbatim. ``chat_template`` adds the
    2026 release's prompt layout as ``chat_template``.
    """

    def entry(content: str, special: bool) -> dict[str, Any]:
        return {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }

    added: dict[str, Any] = {}
    for i in range(FIRST_BYTE_ID):
        added[str(i)] = entry(_special_name(i), True)
    for i in range(TEXT_VOCAB_END, vocab_size):
        added[str(i)] = entry(_added_name(i), False)
    config: dict[str, Any] = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<unk>",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    if chat_template:
        config["chat_template"] = RELEASE_2026_CHAT_TEMPLATE
    return config


def write_step1_part(llm_dir: Path, seed: int = 0, official_size: bool = False, chat_template: bool = False) -> None:
    """Write the tiny Step1 files into ``llm_dir`` (the ``Step-Audio-EditX`` folder).

    ``official_size`` writes the official dimensions (3.5 B parameters, 7 GB in bf16): a model as
    fast as the real one, for speed measurements. ``chat_template`` writes tokenizer files in the
    2026 release's form (with a chat template), so prompts take that layout.
    """
    llm_dir = Path(llm_dir)
    llm_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_config_dict(official_size)
    (llm_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = _random_weights(config, seed)
    save_file(tensors, str(llm_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": {name: WEIGHTS_FILE for name in sorted(tensors)}}
    (llm_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (llm_dir / "tokenizer.model").write_bytes(build_tokenizer_model(config["vocab_size"]))
    (llm_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config_dict(config["vocab_size"], chat_template), indent=2) + "\n")
