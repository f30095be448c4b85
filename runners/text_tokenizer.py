"""The Step1 text tokenizer, giving the ids upstream's ``tokenizer.encode(text)`` gave.

Upstream loads ``tokenizer.model`` + ``tokenizer_config.json`` (LlamaTokenizer)
with ``AutoTokenizer`` under transformers 4.53, which means the *fast*
tokenizer converted from sentencepiece (``LlamaConverter``). transformers 5.x
builds a different Unigram from the same file and its ids differ on ordinary
text (measured on the tiny tokenizer), so we rebuild the 4.53 conversion
ourselves with the ``tokenizers`` library, from the same two files:

- model: Unigram over every sentencepiece piece with its score (ids 0..2
  scored 0), unknown id 0, byte fallback (``"\\n"`` → ``<0x0A>``);
- spacing, non-legacy (``"legacy": false``): no normalizer; a Metaspace
  pre-tokenizer turns spaces into ``▁`` and prepends one ``▁`` only at the very
  start of the input (``prepend_scheme="first"``, no splitting); so text right
  after an added token gets no ``▁``. With ``"legacy": true`` (or the key
  absent, 4.53's default) every text span gets a ``▁`` prepended instead;
- added tokens: sentencepiece CONTROL/USER_DEFINED pieces and every entry of
  ``added_tokens_decoder`` match verbatim before the model runs, so
  ``"<audio_12><audio_7>"`` is exactly ``[65548, 65543]``;
- special tokens around the result: BOS only if ``add_bos_token`` (4.53's
  default is True), EOS only if ``add_eos_token``.

What the official files say, as far as public sources show (moderate-high
confidence; the files themselves were not reachable from here): the prompts
that the official code builds with ``[1] + [4] + encode("system\\n…") + [3] …``
have the same length as a chat template that spells ``<s>`` once and encodes
``<|BOT|> system\\n…`` with no special tokens (416 and 430 tokens for two edit
prompts in the MLX Swift port's parity record), which rules out a BOS per
``encode`` call and rules out legacy spacing (that would put an extra ``▁``
before the newline after the audio tokens). A public conversion of the
official files to ``tokenizer.json`` has exactly this Metaspace
``prepend_scheme: first`` pre-tokenizer, i.e. ``legacy: false``. The tiny
tokenizer_config therefore says ``add_bos_token: false, legacy: false``, and
this class honours whatever the real file says.

Chat template: when the files carry one (``chat_template`` in tokenizer_config.json, or
``chat_template.jinja``), :attr:`TextTokenizer.chat_template` holds it and
:meth:`TextTokenizer.apply_chat_template` gives the ids transformers'
``apply_chat_template(messages, tokenize=True, add_generation_prompt=True)`` gives: the
rendered text encoded with no BOS/EOS added, whatever ``add_bos_token`` says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sentencepiece import sentencepiece_model_pb2 as sp_pb
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import Unigram

from runners.chat_template import ChatMessage, find_chat_template, render_chat

BOT_TOKEN = "<|BOT|>"
EOT_TOKEN = "<|EOT|>"
_CONTROL = sp_pb.ModelProto.SentencePiece.CONTROL
_USER_DEFINED = sp_pb.ModelProto.SentencePiece.USER_DEFINED
_UNIGRAM = sp_pb.TrainerSpec.UNIGRAM


def _token_content(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json is a string or an AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    return str(value["content"])


class TextTokenizer:
    """Encode/decode text for the Step1 LLM exactly as upstream's transformers 4.53 setup did."""

    def __init__(self, llm_dir: Path | str) -> None:
        llm_dir = Path(llm_dir)
        proto = sp_pb.ModelProto()
        proto.ParseFromString((llm_dir / "tokenizer.model").read_bytes())
        if proto.trainer_spec.model_type != _UNIGRAM:
            raise ValueError(f"{llm_dir / 'tokenizer.model'} is not a sentencepiece Unigram model")
        config_path = llm_dir / "tokenizer_config.json"
        config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}

        self.legacy: bool = bool(config.get("legacy", True) if config.get("legacy") is not None else True)
        self.add_bos: bool = bool(config.get("add_bos_token", True))
        self.add_eos: bool = bool(config.get("add_eos_token", False))
        self._tokenizer = self._build(proto, config)
        self.vocab_size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)

        def required_id(token: str) -> int:
            found = self._tokenizer.token_to_id(token)
            if found is None:
                raise ValueError(f"tokenizer in {llm_dir} has no {token!r}")
            return int(found)

        self.bos_id = required_id(_token_content(config.get("bos_token")) or "<s>")
        self.unk_id = 0
        self.bot_id = required_id(BOT_TOKEN)
        self.eot_id = required_id(EOT_TOKEN)
        # Step1's end of generation is <|EOT|> (config.json eos_token_id 3), not the
        # sentencepiece </s>; generation stops on this id.
        self.eos_id = self.eot_id
        self.chat_template: str | None = find_chat_template(llm_dir, config)
        self.special_tokens: dict[str, str] = {
            name: content
            for name in ("bos_token", "eos_token", "unk_token", "pad_token")
            if (content := _token_content(config.get(name))) is not None
        }

    def _build(self, proto: sp_pb.ModelProto, config: dict[str, Any]) -> Tokenizer:
        """Reproduce transformers 4.53's LlamaConverter output for these files."""
        vocab = [(p.piece, 0.0 if i < 3 else float(p.score)) for i, p in enumerate(proto.pieces)]
        tokenizer = Tokenizer(Unigram(vocab, unk_id=0, byte_fallback=True))
        if self.legacy:
            tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        else:
            tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        piece_tokens = [
            AddedToken(p.piece, normalized=False, special=p.type == _CONTROL)
            for p in proto.pieces
            if p.type in (_CONTROL, _USER_DEFINED)
        ]
        tokenizer.add_tokens(piece_tokens)
        declared: list[AddedToken] = []
        for _, entry in sorted(config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0])):
            declared.append(
                AddedToken(
                    entry["content"],
                    single_word=bool(entry.get("single_word", False)),
                    lstrip=bool(entry.get("lstrip", False)),
                    rstrip=bool(entry.get("rstrip", False)),
                    normalized=bool(entry.get("normalized", False)),
                    special=bool(entry.get("special", False)),
                )
            )
        if declared:
            tokenizer.add_tokens(declared)
        return tokenizer

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids for ``text``; BOS/EOS only where tokenizer_config.json asks for them (and ``add_special_tokens``)."""
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        if not add_special_tokens:
            return list(ids)
        if self.add_bos:
            ids = [self.bos_id, *ids]
        if self.add_eos:
            ids = [*ids, self._tokenizer.token_to_id("</s>")]
        return list(ids)

    def apply_chat_template(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> list[int]:
        """Prompt ids through the checkpoint's own chat template (which writes its own special tokens)."""
        if self.chat_template is None:
            raise ValueError("these tokenizer files carry no chat template")
        text = render_chat(self.chat_template, messages, self.special_tokens, add_generation_prompt)
        return self.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(int(token_id))
