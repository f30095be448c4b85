"""The Step1 decoder (Step-Audio-EditX's LLM), native to this project.

Layout and numerics follow the released checkpoint (UPSTREAM.md §2.1):
pre-RMSNorm blocks, grouped-query attention where head ``h`` reads KV group
``h // (heads / groups)``, SwiGLU MLP, final RMSNorm, untied ``lm_head``, and no
rotary embedding: position enters only as the sqrt-ALiBi bias
``-slope[h] * sqrt(i - j)`` added to the attention scores.

What differs from the reference remote code, on purpose:
- the bias is built once per forward (not once per layer) and only for the new
  query rows, so a cached decode step costs O(T) in bias, not O(T²);
- a 2-D ``attention_mask`` masks left padding, so a padded batch gives the same
  logits as each prompt alone (left padding keeps every i - j distance intact);
- the KV cache stores the grouped K/V (4 heads, not 48) and SDPA expands them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from runners.models.step1.configuration import Step1Config

# The outputs' cache field is ``cache`` from transformers 5.24 on, ``past_key_values`` before (5.17
# is what the GPU machines' image holds): fill whichever this transformers has.
_CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The standard ALiBi slope per head, float32, shape (num_heads,).

    For a power-of-two count n the slopes are 2^(-8k/n), k = 1..n. Otherwise the
    largest power of two below the count gets that table and the remaining heads
    take the odd steps of the table for twice as many heads: 2^(-4k/n), k = 1, 3, 5…
    """
    base = 2 ** math.floor(math.log2(num_heads))
    first = torch.pow(2.0 ** (-8.0 / base), torch.arange(1, base + 1))
    if base == num_heads:
        return first
    extra = torch.pow(2.0 ** (-4.0 / base), torch.arange(1, 2 * (num_heads - base), 2))
    return torch.cat([first, extra])


def sqrt_alibi_bias(
    slopes: torch.Tensor,
    query_start: int,
    query_len: int,
    key_len: int,
    key_padding: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Additive attention bias for queries at cache rows ``query_start..+query_len``.

    Returns (B or 1, H, query_len, key_len): ``-slope * sqrt(i - j)`` for visible
    keys and ``-inf`` for future keys and padded keys. A padded query row may see
    only itself, so no row is entirely masked (that would turn into NaN and leak
    into later layers through the cached values). ``key_padding`` is a bool
    (B, key_len) tensor, True where the key is padding.
    """
    device = slopes.device
    query_rows = torch.arange(query_start, query_start + query_len, device=device)
    key_cols = torch.arange(key_len, device=device)
    distance = query_rows[:, None] - key_cols[None, :]
    future = distance < 0
    bias = -torch.sqrt(distance.clamp(min=0).to(torch.float32))
    bias = bias[None, :, :] * slopes[:, None, None]  # (H, Tq, Tk) float32
    bias = bias.masked_fill(future[None], float("-inf"))[None]  # (1, H, Tq, Tk)
    if key_padding is not None and bool(key_padding.any()):
        not_self = distance != 0  # (Tq, Tk)
        hidden = key_padding[:, None, :] & not_self[None]  # (B, Tq, Tk)
        bias = bias.masked_fill(hidden[:, None], float("-inf"))
    return bias.to(dtype)


class Step1RMSNorm(nn.Module):
    """RMSNorm whose variance is taken in float32 and whose scaling happens in the input dtype."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(variance + self.eps).to(x.dtype) * self.weight


class Step1MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Step1Attention(nn.Module):
    """GQA self-attention with an additive sqrt-ALiBi bias; K/V are cached per group."""

    def __init__(self, config: Step1Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_groups = config.num_attention_groups
        self.head_dim = config.head_dim
        kv_width = self.num_groups * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        batch, length, _ = hidden.shape
        q = self.q_proj(hidden).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(batch, length, self.num_groups, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(batch, length, self.num_groups, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        # enable_gqa repeats each KV group over consecutive heads: head h ↔ group h // heads_per_group.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=self.num_groups != self.num_heads)
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(out)


class Step1DecoderLayer(nn.Module):
    def __init__(self, config: Step1Config, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Step1Attention(config, layer_idx)
        self.mlp = Step1MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = Step1RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = Step1RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), bias, cache)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class Step1PreTrainedModel(PreTrainedModel):
    config_class = Step1Config
    config: Step1Config
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Step1DecoderLayer"]
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, Step1RMSNorm):
            nn.init.ones_(module.weight)


def _pick_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """transformers 5.24 passes the cache as ``cache=``; 4.x callers use ``past_key_values=``."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("pass the KV cache once, as cache= (or past_key_values=), not both")
    return cache if cache is not None else past_key_values


class Step1Model(Step1PreTrainedModel):
    """Embedding, decoder stack and final norm (the ``model.`` prefix of the checkpoint)."""

    def __init__(self, config: Step1Config) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Step1DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Step1RMSNorm(config.hidden_size, config.rms_norm_eps)
        # Not a parameter or buffer: derived from the head count, kept per device. (A
        # non-persistent buffer would be left uninitialised by from_pretrained's meta-device load.)
        self._slopes_by_device: dict[torch.device, torch.Tensor] = {}
        self.post_init()

    def slopes_on(self, device: torch.device) -> torch.Tensor:
        """The ALiBi slope table on ``device`` (float32), computed once per device."""
        if device not in self._slopes_by_device:
            self._slopes_by_device[device] = alibi_slopes(self.config.num_attention_heads).to(device)
        return self._slopes_by_device[device]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: Cache | None = None,
        attention_bias: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """``attention_mask`` is 2-D (batch, past + new) with 0 at left padding; 4-D masks are refused.

        ``attention_bias`` (B or 1, H, new, keys) replaces the bias built from the cache length and the
        mask: the batched decode step of the scheduler passes one whose rows sit at different positions.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        cache = _pick_cache(cache, past_key_values)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length, _ = inputs_embeds.shape
        past = cache.get_seq_length() if cache is not None else 0
        total = past + length

        key_padding: torch.Tensor | None = None
        if attention_bias is not None:
            bias = attention_bias
        elif attention_mask is not None:
            if attention_mask.dim() != 2:
                raise ValueError("Step1 takes a 2-D attention_mask (batch, keys); got %d-D" % attention_mask.dim())
            if attention_mask.shape[-1] < total:
                raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} keys, the cache holds {total}")
            key_padding = attention_mask[:, -total:] == 0
        if attention_bias is None:
            slopes = self.slopes_on(inputs_embeds.device)
            bias = sqrt_alibi_bias(slopes, past, length, total, key_padding, inputs_embeds.dtype)

        hidden = inputs_embeds
        all_hidden: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            hidden = layer(hidden, bias, cache)
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            **{_CACHE_FIELD: cache if use_cache else None},
        )


class Step1ForCausalLM(Step1PreTrainedModel, GenerationMixin):
    """Step1 with its (untied) LM head; works with ``generate`` and with our own decode loop."""

    def __init__(self, config: Step1Config) -> None:
        super().__init__(config)
        self.model = Step1Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def restrict_logits(self, ids: torch.Tensor | None) -> bool:
        """Compute logits only for ``ids`` (None: all); the rest are -inf. False when the head is not plain.

        When every request may only sample the audio ids and EOS (audio-only decoding), the
        output layer needs 5,121 of its rows, not the whole vocabulary: on a CPU most of a
        small model's step is that layer, and its cost grows with the batch.
        """
        if ids is None or type(self.lm_head) is not nn.Linear:
            self._logit_rows = self._logit_weight = None
            return ids is None
        self._logit_rows = ids.to(self.lm_head.weight.device)
        self._logit_weight = self.lm_head.weight.index_select(0, self._logit_rows).contiguous()
        return True

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: Cache | None = None,
        attention_bias: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """``logits_to_keep=N`` computes logits for the last N positions only (0 = all)."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=_pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            attention_bias=attention_bias,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        rows = getattr(self, "_logit_rows", None)
        if rows is None:
            logits = self.lm_head(hidden)
        else:  # only the ids that may be sampled; the others can never be, so they stay -inf
            logits = hidden.new_full((*hidden.shape[:-1], self.lm_head.out_features), float("-inf"))
            logits.index_copy_(-1, rows, nn.functional.linear(hidden, self._logit_weight))
        return CausalLMOutputWithPast(logits=logits, hidden_states=out.hidden_states,
                                      **{_CACHE_FIELD: getattr(out, _CACHE_FIELD)})


def register_step1() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` resolve ``model_type: step1`` to our classes."""
    try:
        AutoConfig.register(Step1Config.model_type, Step1Config)
    except ValueError:  # already registered (module reloaded)
        pass
    try:
        AutoModelForCausalLM.register(Step1Config, Step1ForCausalLM)
    except ValueError:
        pass


register_step1()
