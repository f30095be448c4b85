"""Configuration of the Step1 decoder, readable from the official ``config.json`` as is.

The official file names ``model_type: step1`` and points ``auto_map`` at remote
code; we register our own class under the same ``model_type`` instead, so the
unchanged file loads without ``trust_remote_code``.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig as PreTrainedConfig  # the 4.x name still works in 5.x

# The released Step-Audio-EditX numbers (UPSTREAM.md §2.1); tests derive the
# expected checkpoint layout from these.
OFFICIAL_CONFIG: dict[str, Any] = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_attention_heads": 48,
    "num_attention_groups": 4,
    "num_hidden_layers": 32,
    "max_seq_len": 32768,
    "vocab_size": 74752,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 3,
    "pad_token_id": 0,
}


def expected_state_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor name and shape a Step1 config implies (official names).

    The serving code measures weight memory and picks the layers a quantization kernel can take
    from these shapes, and the tiny checkpoint is written from them, so the rule lives with the config.
    """
    hidden = int(config["hidden_size"])
    inter = int(config["intermediate_size"])
    head_dim = hidden // int(config["num_attention_heads"])
    kv = int(config["num_attention_groups"]) * head_dim
    vocab = int(config["vocab_size"])
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "self_attn.q_proj.weight"] = (hidden, hidden)
        shapes[p + "self_attn.k_proj.weight"] = (kv, hidden)
        shapes[p + "self_attn.v_proj.weight"] = (kv, hidden)
        shapes[p + "self_attn.o_proj.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
    return shapes


class Step1Config(PreTrainedConfig):
    """Hyper-parameters of Step1: GQA over ``num_attention_groups`` KV heads, sqrt-ALiBi, no RoPE."""

    model_type = "step1"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    def __init__(
        self,
        hidden_size: int = OFFICIAL_CONFIG["hidden_size"],
        intermediate_size: int = OFFICIAL_CONFIG["intermediate_size"],
        num_attention_heads: int = OFFICIAL_CONFIG["num_attention_heads"],
        num_attention_groups: int = OFFICIAL_CONFIG["num_attention_groups"],
        num_hidden_layers: int = OFFICIAL_CONFIG["num_hidden_layers"],
        max_seq_len: int = OFFICIAL_CONFIG["max_seq_len"],
        vocab_size: int = OFFICIAL_CONFIG["vocab_size"],
        rms_norm_eps: float = OFFICIAL_CONFIG["rms_norm_eps"],
        initializer_range: float = 0.02,
        bos_token_id: int = OFFICIAL_CONFIG["bos_token_id"],
        eos_token_id: int = OFFICIAL_CONFIG["eos_token_id"],
        pad_token_id: int = OFFICIAL_CONFIG["pad_token_id"],
        tie_word_embeddings: bool = False,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if num_attention_heads % num_attention_groups:
            raise ValueError(
                f"num_attention_heads {num_attention_heads} is not a multiple of num_attention_groups {num_attention_groups}"
            )
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_attention_heads = num_attention_heads
        self.num_attention_groups = num_attention_groups
        self.num_hidden_layers = num_hidden_layers
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        # The checkpoint stores lm_head separately from the embedding; never tie.
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_attention_groups
