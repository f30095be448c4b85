"""Native Step1: official checkpoint layout, sqrt-ALiBi, caching, padded batches, sampling."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from runners.llm import Step1LM
from tests.step1_reference import RepetitionAwareLogitsProcessor, generate
from runners.model_store import LLM_DIR
from runners.step1 import (
    OFFICIAL_CONFIG,
    Step1Config,
    Step1ForCausalLM,
    alibi_slopes,
    expected_state_shapes,
    sqrt_alibi_bias,
)
from runners.tiny import build_tiny_model_root
from runners.tiny.step1 import WEIGHTS_FILE

PARITY = Path(__file__).parent / "data" / "parity" / "step1_logits.npz"
EOS = 3


@pytest.fixture(scope="module")
def llm_dir(tiny_root: Path) -> Path:
    return tiny_root / LLM_DIR


@pytest.fixture(scope="module")
def lm(llm_dir: Path) -> Step1LM:
    return Step1LM.from_pretrained(llm_dir, dtype=torch.float32)


def _prompt(length: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return [1, 4, *torch.randint(5, 74752, (length - 2,), generator=gen).tolist()]


# ---- checkpoint layout -------------------------------------------------------------


def test_official_shapes_derived_from_the_official_config() -> None:
    shapes = expected_state_shapes(OFFICIAL_CONFIG)
    assert len(shapes) == 291  # the official checkpoint holds 291 tensors
    assert shapes["model.embed_tokens.weight"] == (74752, 3072)
    assert shapes["lm_head.weight"] == (74752, 3072)
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (3072, 3072)
    assert shapes["model.layers.31.self_attn.k_proj.weight"] == (256, 3072)  # 4 groups × 64
    assert shapes["model.layers.31.mlp.down_proj.weight"] == (3072, 8192)
    assert shapes["model.norm.weight"] == (3072,)
    params = sum(math.prod(s) for s in shapes.values())
    assert 3.5e9 < params < 3.56e9  # 7.06 GB in bf16


def test_our_module_tree_is_the_official_layout_at_full_size() -> None:
    config = Step1Config(**OFFICIAL_CONFIG)
    assert (config.head_dim, config.heads_per_group) == (64, 12)
    with torch.device("meta"):
        model = Step1ForCausalLM(config)
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert ours == expected_state_shapes(OFFICIAL_CONFIG)


def test_tiny_checkpoint_uses_official_names_shapes_and_dtype(llm_dir: Path) -> None:
    config = json.loads((llm_dir / "config.json").read_text())
    assert config["model_type"] == "step1" and config["architectures"] == ["Step1ForCausalLM"]
    assert config["vocab_size"] == OFFICIAL_CONFIG["vocab_size"]
    with safe_open(str(llm_dir / WEIGHTS_FILE), "pt") as handle:
        stored = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
    assert stored == expected_state_shapes(config)
    assert dtypes == {"BF16"}
    index = json.loads((llm_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(stored)


def test_official_config_json_loads_without_remote_code(tmp_path: Path) -> None:
    official = {
        "architectures": ["Step1ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_step1.Step1Config",
            "AutoModelForCausalLM": "modeling_step1.Step1ForCausalLM",
        },
        "model_type": "step1",
        "torch_dtype": "bfloat16",
        **OFFICIAL_CONFIG,
    }
    (tmp_path / "config.json").write_text(json.dumps(official))
    config = AutoConfig.from_pretrained(tmp_path, local_files_only=True)
    assert isinstance(config, Step1Config)
    assert (config.num_attention_groups, config.max_seq_len, config.eos_token_id) == (4, 32768, 3)
    assert config.tie_word_embeddings is False


def test_auto_model_loads_tiny_checkpoint_as_native_step1(llm_dir: Path) -> None:
    model, info = AutoModelForCausalLM.from_pretrained(llm_dir, local_files_only=True, output_loading_info=True)
    assert isinstance(model, Step1ForCausalLM)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


# ---- sqrt-ALiBi ------------------------------------------------------------------


def test_alibi_slopes_follow_the_standard_table() -> None:
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -k for k in range(1, 9)]))
    slopes48 = alibi_slopes(48)
    expected = [2.0 ** (-k / 4) for k in range(1, 33)] + [2.0 ** (-(2 * k - 1) / 8) for k in range(1, 17)]
    assert torch.allclose(slopes48, torch.tensor(expected))


def test_bias_is_minus_slope_sqrt_distance_and_decode_rows_are_incremental() -> None:
    slopes = alibi_slopes(8)
    full = sqrt_alibi_bias(slopes, 0, 6, 6, None, torch.float32)[0]
    i, j = 5, 1
    assert full[2, i, j].item() == pytest.approx(-slopes[2].item() * math.sqrt(i - j))
    assert full[0, 1, 3].item() == float("-inf")  # causal
    step = sqrt_alibi_bias(slopes, 5, 1, 6, None, torch.float32)
    assert step.shape == (1, 8, 1, 6)  # one new row: O(T), not T×T
    assert torch.equal(step[0, :, 0], full[:, 5])


def test_padding_keys_are_masked_and_no_row_is_empty() -> None:
    padding = torch.tensor([[True, True, False, False]])
    bias = sqrt_alibi_bias(alibi_slopes(4), 0, 4, 4, padding, torch.float32)
    assert torch.isinf(bias[0, :, 2:, :2]).all()  # real queries never see pads
    assert torch.isfinite(bias[0, :, 0, 0]).all()  # a pad row keeps itself
    assert torch.isfinite(bias).any(dim=-1).all()


# ---- model behaviour -------------------------------------------------------------


def test_cached_decoding_gives_the_uncached_logits(lm: Step1LM) -> None:
    ids = torch.tensor([_prompt(24, seed=1)])
    with torch.inference_mode():
        full = lm.model(ids, use_cache=False).logits
        out = lm.model(ids[:, :16], use_cache=True)
        # the output's cache field is `cache` from transformers 5.24 on, `past_key_values` before
        pieces, cache = [out.logits], out.cache if hasattr(out, "cache") else out.past_key_values
        for t in range(16, 24):
            out = lm.model(ids[:, t : t + 1], cache=cache, use_cache=True)
            pieces.append(out.logits)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_matches_each_prompt_alone(lm: Step1LM) -> None:
    short, long = _prompt(7, seed=2), _prompt(19, seed=3)
    ids = torch.zeros((2, 19), dtype=torch.long)
    mask = torch.zeros((2, 19), dtype=torch.long)
    ids[0, 12:], mask[0, 12:] = torch.tensor(short), 1
    ids[1], mask[1] = torch.tensor(long), 1
    with torch.inference_mode():
        batched = lm.model(ids, attention_mask=mask, use_cache=False).logits
        alone_short = lm.model(torch.tensor([short]), use_cache=False).logits[0]
        alone_long = lm.model(torch.tensor([long]), use_cache=False).logits[0]
    assert torch.allclose(batched[0, 12:], alone_short, atol=1e-5, rtol=1e-5)
    assert torch.allclose(batched[1], alone_long, atol=1e-5, rtol=1e-5)
    together = generate(lm, [short, long], temperature=0, max_new_tokens=8)
    apart = [generate(lm, [p], temperature=0, max_new_tokens=8)[0] for p in (short, long)]
    assert together == apart
    assert all(len(ids_) == 8 for ids_ in together)


def test_transformers_generate_uses_our_cache(lm: Step1LM) -> None:
    prompt = _prompt(12, seed=4)
    with torch.inference_mode():
        hf = lm.model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=6, pad_token_id=0, eos_token_id=EOS)
    assert hf[0, len(prompt) :].tolist() == generate(lm, [prompt], temperature=0, max_new_tokens=6)[0]


def test_matches_reference_remote_code() -> None:
    """Numbers from upstream's modeling_step1.py (transformers 4.53.3, fp32, CPU) on the seed-0 tiny model."""
    ref = np.load(PARITY)
    prompt = ref["prompt"].tolist()
    # the parity file was recorded on a step1-only seed-0 root; rebuild that checkpoint here
    with tempfile.TemporaryDirectory() as tmp:
        root = build_tiny_model_root(tmp, seed=0, parts={"step1"})
        lm = Step1LM.from_pretrained(root / LLM_DIR, dtype=torch.float32)
        bf16 = Step1LM.from_pretrained(root / LLM_DIR, dtype=torch.bfloat16)
    with torch.inference_mode():
        logits = lm.model(torch.tensor([prompt]), use_cache=False).logits[0]
    probe = logits[:, torch.from_numpy(ref["vocab_probe"])].numpy()
    np.testing.assert_allclose(probe, ref["logits_probe"], atol=1e-4, rtol=0)
    assert (logits.argmax(-1).numpy() == ref["argmax"]).all()
    with torch.inference_mode():
        logits_bf16 = bf16.model(torch.tensor([prompt]), use_cache=False).logits[0].float()
    probe_bf16 = logits_bf16[:, torch.from_numpy(ref["vocab_probe"])].numpy()
    np.testing.assert_allclose(probe_bf16, ref["logits_probe_bf16"], atol=0.25, rtol=0)  # measured: identical
    assert (logits_bf16.argmax(-1).numpy() == ref["argmax_bf16"]).mean() >= 0.95
    assert logits[-1].topk(5).indices.tolist() == ref["top5_last"].tolist()
    assert generate(lm, [prompt], temperature=0, max_new_tokens=len(ref["greedy"]))[0] == ref["greedy"].tolist()
    # official sampling (temperature 0.7, top-k 50 default, repetition rule) with torch.manual_seed(seed)
    sampled = generate(lm, [prompt], seed=int(ref["sample_seed"]), max_new_tokens=len(ref["sampled"]))[0]
    assert sampled == ref["sampled"].tolist()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loads_and_tracks_fp32(llm_dir: Path, lm: Step1LM, dtype: torch.dtype) -> None:
    half = Step1LM.from_pretrained(llm_dir, dtype=dtype)
    assert {p.dtype for p in half.model.parameters()} == {dtype}
    ids = torch.tensor([_prompt(20, seed=5)])
    with torch.inference_mode():
        low = half.model(ids, use_cache=False).logits.float()
        ref = lm.model(ids, use_cache=False).logits
    assert torch.isfinite(low).all()
    assert (low - ref).abs().max().item() < 0.1 * ref.abs().max().item()
    assert len(generate(half, [ids[0].tolist()], seed=0, max_new_tokens=4)[0]) == 4


# ---- generation rules ----------------------------------------------------------------


def test_repetition_rule_blocks_a_repeated_last_id_once_the_window_is_full() -> None:
    rule = RepetitionAwareLogitsProcessor()
    scores = torch.zeros(3, 20)
    history = torch.tensor(
        [
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 7],  # 7 twice in the window → blocked
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  # 10 once → untouched
            [9, 9, 3, 4, 5, 6, 7, 8, 11, 12],  # 12 once → untouched
        ]
    )
    out = rule(history, scores.clone())
    assert out[0, 7] == float("-inf") and torch.isfinite(out[0, :7]).all()
    assert torch.isfinite(out[1:]).all()
    short = torch.tensor([[5, 5, 5]])
    assert torch.isfinite(rule(short, torch.zeros(1, 20))).all()  # window not full yet


def test_generation_never_repeats_an_id_inside_the_window(lm: Step1LM) -> None:
    out = generate(lm, [_prompt(16, seed=6)], temperature=0, max_new_tokens=30)[0]
    for k in range(1, len(out)):
        window = out[max(0, k - 10) : k]
        # the rule forbids emitting the previous id when it already sits twice in the last 10
        if window.count(out[k - 1]) >= 2:
            assert out[k] != out[k - 1]


def test_eos_is_stripped_and_nothing_after_it_is_returned(lm: Step1LM, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = [_prompt(9, seed=7), _prompt(14, seed=8)]
    stop_after = [2, 5]  # row r says EOS as its (stop_after[r] + 1)-th sampled id
    real_step = lm.decode_step
    calls = {"n": 0}

    def forcing_eos(cache, input_ids, positions, key_len):
        logits = real_step(cache, input_ids, positions, key_len)
        produced = calls["n"] + 1  # ids sampled before this step's
        calls["n"] += 1
        for row, limit in enumerate(stop_after):
            if produced == limit:
                logits[row] = float("-inf")
                logits[row, EOS] = 0.0
        return logits

    monkeypatch.setattr(lm, "decode_step", forcing_eos)
    out = generate(lm, prompts, seed=3, max_new_tokens=20)
    assert [len(ids) for ids in out] == [2, 5]
    assert all(EOS not in ids for ids in out)


def test_seeded_generation_is_reproducible(lm: Step1LM) -> None:
    prompts = [_prompt(10, seed=9), _prompt(6, seed=10)]
    first = generate(lm, prompts, seed=42, max_new_tokens=12)
    assert first == generate(lm, prompts, seed=42, max_new_tokens=12)
    assert first != generate(lm, prompts, seed=43, max_new_tokens=12)


def test_length_budget_counts_prompt_plus_output(lm: Step1LM) -> None:
    prompt = _prompt(20, seed=11)
    assert len(generate(lm, [prompt], seed=0, max_length=25)[0]) <= 5
    assert len(generate(lm, [prompt], seed=0, max_length=100, max_new_tokens=3)[0]) <= 3
    with pytest.raises(ValueError, match="max_length"):
        generate(lm, [_prompt(30, seed=12)], max_length=30)
    with pytest.raises(ValueError, match="empty"):
        generate(lm, [[]])


def test_chunked_prefill_matches_one_pass(llm_dir: Path, lm: Step1LM) -> None:
    chunked = Step1LM(lm.model, prefill_chunk=5)
    prompt = _prompt(23, seed=13)
    assert generate(chunked, [prompt], temperature=0, max_new_tokens=6) == generate(
        lm, [prompt], temperature=0, max_new_tokens=6
    )


def test_allowed_ids_restrict_what_is_sampled(lm: Step1LM) -> None:
    import torch

    allowed = torch.arange(65536, 65536 + 5120)
    out = generate(lm, [_prompt(8, seed=11)], seed=5, max_new_tokens=25, allowed_ids=allowed)[0]
    assert len(out) == 25 and all(65536 <= i < 65536 + 5120 for i in out)


def test_preallocated_slot_cache_gives_the_dynamic_cache_logits(lm: Step1LM) -> None:
    """Three requests of different lengths decoded together in slots = each alone through DynamicCache."""
    prompts = [_prompt(n, seed=20 + n) for n in (5, 11, 17)]
    steps = [[3 + k, 9 + k, 70000 + k] for k in range(4)]  # the ids fed at each decode step, per row
    cache = lm.new_cache(slots=3, max_len=32)
    for slot, prompt in enumerate(prompts):
        lm.prefill(cache, slot, prompt, 0)
    batched = []
    for fed in steps:
        positions = torch.tensor(cache.lengths)
        batched.append(lm.decode_step(cache, torch.tensor(fed), positions, max(cache.lengths) + 1))
        cache.lengths = [n + 1 for n in cache.lengths]
    for row, prompt in enumerate(prompts):
        dyn = DynamicCache()
        with torch.inference_mode():
            lm.model(torch.tensor([prompt]), cache=dyn, use_cache=True)
            for k, fed in enumerate(steps):
                ref = lm.model(torch.tensor([[fed[row]]]), cache=dyn, use_cache=True).logits[0, -1].float()
                # float32 rounding, scaled to the logits (up to ~20 here): a batch of 3 and a single row are
                # summed in different orders by the CPU's matmul (measured up to 1.07e-5, ~5 ulps, on an
                # AVX512/AMX Xeon); a cache mix-up is off by whole units.
                torch.testing.assert_close(batched[k][row], ref, rtol=1e-5, atol=2e-6 * float(ref.abs().max()))


def test_a_seeded_prompt_gives_the_same_ids_alone_and_among_seven_others(lm: Step1LM) -> None:
    prompts = [_prompt(6 + 3 * k, seed=40 + k) for k in range(8)]
    together = generate(lm, prompts, seed=9, max_new_tokens=16)
    for k in (0, 3, 7):
        assert generate(lm, [prompts[k]], seed=9, max_new_tokens=16)[0] == together[k]


def test_a_prompt_head_copied_from_the_prefix_store_gives_the_computed_logits(lm: Step1LM) -> None:
    from runners.kv_cache import PrefixStore

    head = _prompt(12, seed=50)
    texts = [_prompt(5, seed=51), _prompt(9, seed=52)]
    store = PrefixStore(max_tokens=64)
    cache = lm.new_cache(slots=3, max_len=32)
    lm.prefill(cache, 0, head, 0)
    store.put(b"voice", cache, 0, len(head))
    computed = lm.prefill(cache, 0, texts[0], len(head))
    for slot, text in ((1, texts[0]), (2, texts[1])):
        assert store.restore(b"voice", cache, slot) == len(head) == cache.lengths[slot]
        copied = lm.prefill(cache, slot, text, len(head))
        if slot == 1:
            assert torch.equal(copied, computed)
        else:  # another text after the same head: the logits of head + text computed in one slot
            fresh = lm.new_cache(slots=1, max_len=32)
            lm.prefill(fresh, 0, head, 0)
            assert torch.equal(copied, lm.prefill(fresh, 0, text, len(head)))
    assert (len(store), store.tokens) == (1, 12) and store.nbytes == 12 * 2 * cache.keys[:, 0, :, 0].numel() * 4


def test_the_prefix_store_keeps_the_most_recently_used_heads_within_its_token_bound(lm: Step1LM) -> None:
    from runners.kv_cache import PrefixStore

    store = PrefixStore(max_tokens=20)
    cache = lm.new_cache(slots=1, max_len=32)
    lm.prefill(cache, 0, _prompt(16, seed=60), 0)
    store.put(b"a", cache, 0, 8)
    store.put(b"b", cache, 0, 8)
    store.restore(b"a", cache, 0)  # a is now the most recently used
    lm.prefill(cache, 0, _prompt(8, seed=61), 8)
    store.put(b"c", cache, 0, 8)  # 24 > 20 tokens: the least recently used (b) goes
    assert b"a" in store and b"c" in store and b"b" not in store and store.tokens == 16
    store.put(b"huge", cache, 0, 16)  # room is made by evicting the older heads
    assert b"huge" in store and store.tokens <= 20
    store.put(b"too-long", cache, 0, 21)  # beyond the bound: not kept, nothing evicted for it
    assert b"too-long" not in store and b"huge" in store
