"""Quantized LLM variants (EDITX_LLM_QUANTIZATION) on the tiny random model.

Bounds below were measured on the tiny checkpoint (seed 0) against the float32
model over one fixed clone prompt of 290 tokens, then given some room:

| variant | mean relative logit error | max | top-1 agreement | reference top-1 in top 5 |
| --- | --- | --- | --- | --- |
| int8 | 0.022 | 0.039 | 0.93 | 1.00 |
| nf4  | 0.195 | 0.342 | 0.61 | 0.91 |
| awq  | 0.210 | 0.374 | 0.56 | 0.92 |

(A 2-layer, 64-wide random model is the worst case for 4-bit weights: every
logit rests on 64 products. A broken quantization gives a relative error near
1.4 and top-1 agreement near 0. nf4 keeps the tiny model's 16-row k/v projections
unquantized on the CPU, see ``bnb_cpu_refusal``; its figures are the same, to the
third digit, through bitsandbytes' packed AVX512-BF16 kernel and its dequantizing
fallback, and with torch at AVX2 or AVX-512.)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.llm import Step1LM
from runners.model_store import AWQ_DIR, DECODER_DIR, LLM_DIR, TOKENIZER_DIR, ModelLayoutError, ModelPaths
from runners.quantization import (
    NF4_BLOCKSIZE,
    bnb_cpu_refusal,
    kept_unquantized,
    llm_status,
    parse_quantization,
    plain_projections,
    quantized_layer_types,
    weight_memory,
)
from runners.step1 import OFFICIAL_CONFIG, expected_state_shapes
from runners.tiny import write_tiny_awq_part
from runners.tiny.awq import WEIGHTS_FILE, dequantized_error
from tests.service_helpers import decode, in_process_service, service_env, tone, wav_bytes

BOUNDS = {  # variant: (mean rel error ≤, max rel error ≤, top-1 agreement ≥, ref top-1 in top 5 ≥)
    "int8": (0.04, 0.08, 0.85, 0.97),
    "nf4": (0.30, 0.60, 0.45, 0.80),
    "awq": (0.30, 0.60, 0.45, 0.80),
}


@pytest.fixture(scope="module")
def awq_root(tiny_root: Path) -> Path:
    """The session's tiny root with its AWQ-4bit folder (the engine writes it the same way)."""
    if not (tiny_root / AWQ_DIR).is_dir():
        write_tiny_awq_part(tiny_root)
    return tiny_root


@pytest.fixture(scope="module")
def fixed_prompt(tiny_root: Path) -> torch.Tensor:
    from runners.prompts import PromptBuilder
    from runners.text_tokenizer import TextTokenizer

    gen = torch.Generator().manual_seed(1234)
    codec = torch.randint(0, 5120, (150,), generator=gen).tolist()
    builder = PromptBuilder(TextTokenizer(tiny_root / LLM_DIR))
    ids = builder.clone("Please call Stella and ask her.", codec, "Good morning, how are you today?", "clone_0")
    return torch.tensor([ids])


@pytest.fixture(scope="module")
def reference_logits(tiny_root: Path, fixed_prompt: torch.Tensor) -> torch.Tensor:
    model = Step1LM.from_pretrained(tiny_root / LLM_DIR, dtype=torch.float32).model
    with torch.no_grad():
        return model(fixed_prompt).logits[0]


# ---------------------------------------------------------------- config
def test_upstream_spellings_are_accepted() -> None:
    assert EngineConfig().llm_quantization == "none"
    assert EngineConfig.from_env({"EDITX_LLM_QUANTIZATION": "int4"}).llm_quantization == "nf4"
    assert EngineConfig.from_env({"EDITX_LLM_QUANTIZATION": "awq-4bit"}).llm_quantization == "awq"
    assert EngineConfig.from_env({"EDITX_LLM_QUANTIZATION": " INT8 "}).llm_quantization == "int8"
    assert parse_quantization("") == "none"


def test_unknown_value_is_a_clear_config_error() -> None:
    with pytest.raises(ValidationError) as err:
        EngineConfig.from_env({"EDITX_LLM_QUANTIZATION": "int3"})
    message = str(err.value)
    assert "EDITX_LLM_QUANTIZATION 'int3'" in message
    for choice in ("none", "int8", "nf4", "awq"):
        assert choice in message


# ---------------------------------------------------------------- numerics
@pytest.mark.parametrize("variant", ["int8", "nf4", "awq"])
def test_logits_agree_with_the_unquantized_model(
    variant: str, awq_root: Path, fixed_prompt: torch.Tensor, reference_logits: torch.Tensor
) -> None:
    folder = awq_root / (AWQ_DIR if variant == "awq" else LLM_DIR)
    model = Step1LM.from_pretrained(folder, dtype=torch.float32, quantization=variant).model
    with torch.no_grad():
        logits = model(fixed_prompt).logits[0]
    ref = reference_logits
    rel = (logits - ref).norm(dim=-1) / ref.norm(dim=-1)
    top1 = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
    in_top5 = (logits.topk(5, dim=-1).indices == ref.argmax(-1, keepdim=True)).any(-1).float().mean().item()
    mean_bound, max_bound, top1_bound, top5_bound = BOUNDS[variant]
    figures = f"{variant}: rel mean {rel.mean():.4f} max {rel.max():.4f}, top-1 {top1:.3f}, top-5 {in_top5:.3f}"
    assert rel.mean() <= mean_bound and rel.max() <= max_bound, figures
    assert top1 >= top1_bound and in_top5 >= top5_bound, figures
    assert rel.mean() > 0, "the variant changed nothing: its layers are not quantized"


@pytest.mark.parametrize(("variant", "layer_class", "low", "high"), [
    ("int8", "Linear8bitLt", 0.50, 0.55),  # 1 byte per weight + a float32 scale per row
    ("nf4", "Linear4bit", 0.25, 0.40),  # 4 bits per weight + block statistics (double-quantized)
])
def test_bitsandbytes_layers_hold_fewer_bytes(tiny_root: Path, variant: str, layer_class: str, low: float,
                                              high: float) -> None:
    model = Step1LM.from_pretrained(tiny_root / LLM_DIR, dtype=torch.bfloat16, quantization=variant).model
    kept = sorted(kept_unquantized(model.config.to_dict(), variant, "cpu"))
    # int8 quantizes every projection; nf4 keeps the tiny model's 16-row k/v projections as they are.
    assert kept == ([] if variant == "int8" else
                    [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("k_proj", "v_proj")])
    assert plain_projections(model) == kept
    assert quantized_layer_types(model) == ({layer_class} if not kept else {layer_class, "Linear"})
    note = llm_status(variant, model, "unload")["llm_quantization_note"]
    assert (note is None) if not kept else ("4 decoder projection(s) stay unquantized" in note)
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight.dtype == torch.bfloat16  # kept
    mem = weight_memory(model)
    assert low <= mem.layers_vs_bf16 <= high, mem
    plain = weight_memory(Step1LM.from_pretrained(tiny_root / LLM_DIR, dtype=torch.bfloat16).model)
    assert plain.layers_vs_bf16 == pytest.approx(1.0) and plain.total_vs_bf16 == pytest.approx(1.0)


# ---------------------------------------------------------------- bitsandbytes' CPU shape rule
def _projections(config: dict[str, object]) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in expected_state_shapes(config).items() if k.endswith("_proj.weight")}


def test_every_official_projection_fits_every_bitsandbytes_cpu_path() -> None:
    """The released model (kv width 256, hidden 3072, intermediate 8192) is quantized whole on any CPU."""
    shapes = _projections(OFFICIAL_CONFIG)
    assert len(shapes) == 32 * 7
    assert {s for k, s in shapes.items() if "k_proj" in k} == {(256, 3072)}
    for variant in ("int8", "nf4"):
        assert {name: bnb_cpu_refusal(variant, *shape) for name, shape in shapes.items()} == dict.fromkeys(shapes)
        assert kept_unquantized(OFFICIAL_CONFIG, variant, "cpu") == {}


@pytest.mark.parametrize(("rows", "cols"), [(16, 64), (32, 64), (256, 3072), (48, 128), (32, 96), (64, 8192)])
def test_the_nf4_shape_rule_is_what_bitsandbytes_can_pack_for_the_cpu(rows: int, cols: int) -> None:
    """Our rule against the installed library's own repacking for its AVX512-BF16 kernel.

    The repacking is plain torch, so it is checked on every CPU (only the kernel after it needs AVX512-BF16).
    A shape the rule accepts packs; a shape it refuses is one the library refuses too.
    """
    import bitsandbytes.functional as bnbf

    weight = torch.randn(rows, cols, dtype=torch.bfloat16)
    packed, state = bnbf.quantize_4bit(weight, blocksize=NF4_BLOCKSIZE, quant_type="nf4", compress_statistics=True)
    refusal = bnb_cpu_refusal("nf4", rows, cols)
    if refusal is None:
        bnbf._convert_weight_packed_for_cpu(packed, state)
        assert state.packing_format_for_cpu
    else:
        with pytest.raises((AssertionError, RuntimeError)):
            bnbf._convert_weight_packed_for_cpu(packed, state)
    assert bnb_cpu_refusal("int8", rows, cols) is None


def test_nf4_gives_the_same_logits_through_either_bitsandbytes_cpu_path(tiny_root: Path,
                                                                        fixed_prompt: torch.Tensor) -> None:
    """Packed AVX512-BF16 kernel where the CPU has it, dequantize + matmul elsewhere: the same model either way."""
    import bitsandbytes as bnb

    def logits(fallback: bool) -> torch.Tensor:
        model = Step1LM.from_pretrained(tiny_root / LLM_DIR, dtype=torch.float32, quantization="nf4").model
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert len(layers) == 2 * 5 and {m.weight.blocksize for m in layers} == {NF4_BLOCKSIZE}
        if fallback:  # what a CPU without AVX512-BF16 runs
            for layer in layers:
                assert hasattr(layer, "support_avx512bf16_for_cpu")
                layer.support_avx512bf16_for_cpu = False
        with torch.no_grad():
            return model(fixed_prompt).logits[0]

    native, fallback = logits(False), logits(True)
    rel = ((native - fallback).norm(dim=-1) / fallback.norm(dim=-1)).max().item()
    agree = (native.argmax(-1) == fallback.argmax(-1)).float().mean().item()
    # Measured with AVX512-BF16: 1.2 % at most, 98 % the same argmax (the packed kernel multiplies in bf16);
    # on other CPUs both calls take the fallback and agree exactly.
    assert rel < 0.03 and agree >= 0.93, (rel, agree)


# ---------------------------------------------------------------- AWQ checkpoint
def test_tiny_awq_checkpoint_is_in_the_llmcompressor_format(awq_root: Path) -> None:
    from safetensors import safe_open

    folder = awq_root / AWQ_DIR
    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "pack-quantized"
    assert quant["ignore"] == ["lm_head"]
    weights = quant["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["type"], weights["strategy"]) == (4, "int", "group")
    assert quant["config_groups"]["group_0"]["input_activations"] is None  # W4A16
    with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("model.layers.0.mlp.up_proj.weight_packed")
    assert packed.dtype == torch.int32 and packed.shape == (128, 64 * 4 // 32)  # eight 4-bit values per int32
    projections = {k.removesuffix(".weight_packed") for k in keys if k.endswith(".weight_packed")}
    assert len(projections) == 2 * 7
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= keys  # kept dense
    assert not any(k.endswith("proj.weight") for k in keys)


def test_awq_dequantized_weights_match_what_was_quantized(awq_root: Path) -> None:
    errors = dequantized_error(awq_root / LLM_DIR, awq_root / AWQ_DIR)
    assert len(errors) == 14
    worst = max(errors.values())
    assert worst <= 1.0, f"worst projection at {worst:.3f}× the 4-bit round-to-nearest bound"
    assert worst >= 0.5, "errors far below half a step: the weights were not rounded to 4 bits"
    # What the engine loads is exactly the library's dequantization, and lm_head / embeddings are untouched.
    from safetensors.torch import load_file

    source = load_file(str(awq_root / LLM_DIR / WEIGHTS_FILE))
    model = Step1LM.from_pretrained(awq_root / AWQ_DIR, dtype=torch.bfloat16, quantization="awq").model
    assert torch.equal(model.lm_head.weight, source["lm_head.weight"])
    assert torch.equal(model.model.embed_tokens.weight, source["model.embed_tokens.weight"])
    up = model.model.layers[0].mlp.up_proj.weight.float()
    original = source["model.layers.0.mlp.up_proj.weight"].float()
    assert 0 < (up - original).abs().max() < 0.1 * original.abs().max()


# ---------------------------------------------------------------- model store
def _link_root(tiny_root: Path, target: Path, *, awq_as: str | None, decoder_in_base: bool = True) -> Path:
    """A model root made of links into the tiny one, with the AWQ folder placed as given."""
    target.mkdir()
    (target / TOKENIZER_DIR).symlink_to(tiny_root / TOKENIZER_DIR)
    base = target / LLM_DIR
    base.mkdir()
    for item in (tiny_root / LLM_DIR).iterdir():
        if item.name != DECODER_DIR or decoder_in_base:
            (base / item.name).symlink_to(item)
    if awq_as == "sibling":
        (target / AWQ_DIR).symlink_to(tiny_root / AWQ_DIR)
    elif awq_as == "subfolder":
        (base / "awq-4bit").symlink_to(tiny_root / AWQ_DIR)
    return target


def test_missing_awq_folder_is_named(awq_root: Path, tmp_path: Path) -> None:
    root = _link_root(awq_root, tmp_path / "m", awq_as=None)
    ModelPaths(root).check()  # the base layout alone is complete
    with pytest.raises(ModelLayoutError) as err:
        ModelPaths(root, awq=True).check()
    message = str(err.value)
    assert str(root / AWQ_DIR) in message and str(root / LLM_DIR / "awq-4bit") in message
    assert "stepfun-ai/Step-Audio-EditX-AWQ-4bit" in message
    engine = EditXEngine(EngineConfig(model_path=str(root), llm_quantization="awq", cache_dir="", device="cpu"))
    with pytest.raises(Exception, match="AWQ-4bit"):
        engine.load()
    assert engine.state == "failed" and AWQ_DIR in (engine.error or "")


def test_awq_folder_in_both_official_layouts(awq_root: Path, tmp_path: Path) -> None:
    sibling = ModelPaths(_link_root(awq_root, tmp_path / "a", awq_as="sibling"), awq=True).check()
    assert sibling.llm_weights_dir == tmp_path / "a" / AWQ_DIR
    sub = ModelPaths(_link_root(awq_root, tmp_path / "b", awq_as="subfolder"), awq=True).check()
    assert sub.llm_weights_dir == tmp_path / "b" / LLM_DIR / "awq-4bit"
    # The tiny AWQ folder has no decoder of its own: it comes from Step-Audio-EditX/.
    assert sibling.decoder_dir == tmp_path / "a" / LLM_DIR / DECODER_DIR
    assert sibling.text_tokenizer_dir == tmp_path / "a" / AWQ_DIR  # it ships tokenizer.model


def test_awq_decoder_rule_and_what_is_missing(awq_root: Path, tmp_path: Path) -> None:
    root = _link_root(awq_root, tmp_path / "c", awq_as=None, decoder_in_base=False)
    awq = root / AWQ_DIR
    shutil.copytree(awq_root / AWQ_DIR, awq, symlinks=True)
    with pytest.raises(ModelLayoutError) as err:  # no decoder anywhere: the base location is named
        ModelPaths(root, awq=True).check()
    assert str(root / LLM_DIR / DECODER_DIR / "flow.pt") in str(err.value)
    (awq / DECODER_DIR).symlink_to(awq_root / LLM_DIR / DECODER_DIR)
    paths = ModelPaths(root, awq=True).check()  # only the AWQ folder has one: it is used
    assert paths.decoder_dir == awq / DECODER_DIR
    os.remove(awq / WEIGHTS_FILE)
    with pytest.raises(ModelLayoutError, match=r"AWQ-4bit/\*\.safetensors"):
        ModelPaths(root, awq=True).check()


def test_a_hub_id_with_awq_fetches_the_awq_repository_beside(awq_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import runners.model_store as store

    local = {store.HF_LLM_REPO: awq_root / LLM_DIR, store.HF_TOKENIZER_REPO: awq_root / TOKENIZER_DIR,
             store.HF_AWQ_REPO: awq_root / AWQ_DIR}
    asked: list[str] = []
    monkeypatch.setattr(store, "_download", lambda repo, source, cache: asked.append(repo) or local[repo])
    paths = store.resolve_model_root(store.HF_LLM_REPO, "huggingface", cache_dir=tmp_path, awq=True)
    assert asked == [store.HF_LLM_REPO, store.HF_TOKENIZER_REPO, store.HF_AWQ_REPO]
    assert paths.llm_weights_dir == tmp_path / "root" / AWQ_DIR
    assert (paths.llm_weights_dir / "config.json").is_file()


# ---------------------------------------------------------------- engine
def _engine(root: Path, variant: str, **overrides: object) -> EditXEngine:
    values = {"model_path": str(root), "llm_quantization": variant, "max_new_tokens": 20, "cache_dir": "",
              "device": "cpu"} | overrides
    return EditXEngine(EngineConfig(**values))


def test_cuda_graphs_stay_off_by_default_for_bitsandbytes() -> None:
    from runners.quantization import cuda_graphs_mode

    assert cuda_graphs_mode("int8", "auto") == "0" and cuda_graphs_mode("nf4", "auto") == "0"
    assert cuda_graphs_mode("awq", "auto") == "auto" and cuda_graphs_mode("none", "auto") == "auto"
    assert cuda_graphs_mode("nf4", "1") == "1"  # an explicit choice is kept


def test_the_variant_is_not_part_of_the_prompt_cache_settings(awq_root: Path) -> None:
    settings = {v: _engine(awq_root, v).cache_settings() for v in ("none", "int8", "nf4", "awq")}
    assert len(set(settings.values())) == 1, settings


def test_int8_idle_offload_unloads_instead_and_says_so(awq_root: Path) -> None:
    from ui.app import status_markdown

    engine = _engine(awq_root, "int8", idle_action="offload").load()
    assert engine.status()["idle_action_effective"] == "unload"
    shown = status_markdown(engine)  # the UI's status panel
    assert "**LLM variant** int8, weights " in shown and "unloaded instead of offloaded" in shown
    assert "unloaded instead of offloaded" in str(engine.status()["llm_quantization_note"])
    engine.offload("idle for 1 s")
    assert engine.state == "unloaded"
    assert engine.last_unload is not None and engine.last_unload["action"] == "unload"
    assert "unloads instead" in str(engine.last_unload["reason"])
    assert engine.status()["llm_weights"] is None
    engine.tokenize(voice_audio())  # the next request loads it again
    assert engine.state == "loaded"


def test_awq_offloads_like_the_plain_model(awq_root: Path) -> None:
    engine = _engine(awq_root, "awq", idle_action="offload").load()
    assert engine.status()["idle_action_effective"] == "offload"
    engine.offload("idle for 1 s")
    assert engine.state == "offloaded"
    engine.tokenize(voice_audio())
    assert engine.state == "loaded"


def voice_audio():  # noqa: ANN201
    from runners.audio import Audio

    return Audio(torch.from_numpy(tone(1.5)), 16000)


# ---------------------------------------------------------------- over HTTP
@pytest.mark.parametrize("variant", ["int8", "nf4", "awq"])
def test_each_variant_serves_a_clone_an_edit_and_a_stream(variant: str, tiny_root: Path) -> None:
    env = service_env(tiny_root) | {"EDITX_LLM_QUANTIZATION": variant}
    prompt = wav_bytes(tone(2.0))
    with in_process_service(env) as (client, _):
        start = time.monotonic()
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() - start < 300, client.get("/status").text
            time.sleep(0.2)
        status = client.get("/status").json()
        assert status["state"] == "loaded" and status["llm_quantization"] == variant, status
        weights = status["llm_weights"]
        assert weights["total_mb"] > 0
        if variant in ("int8", "nf4"):
            assert weights["layers_vs_bf16"] < 0.6, weights
        clone = client.post("/clone", files={"prompt_audio": ("p.wav", prompt)},
                            data={"prompt_text": "Please call Stella.", "target_text": "Good morning.", "seed": "1"})
        assert clone.status_code == 200, clone.text
        samples, rate = decode(clone.content)
        assert rate == 24000 and samples.size > 0
        edit = client.post("/edit", files={"audio": ("c.wav", clone.content)},
                           data={"edit_type": "emotion", "edit_info": "happy", "audio_text": "Good morning.",
                                 "seed": "1"})
        assert edit.status_code == 200, edit.text
        assert decode(edit.content)[0].size > 0
        streamed = client.post("/clone", files={"prompt_audio": ("p.wav", prompt)},
                               data={"prompt_text": "Please call Stella.", "target_text": "Good morning.", "seed": "1",
                                     "stream": "true", "response_format": "pcm"})
        assert streamed.status_code == 200, streamed.text
        assert len(streamed.content) > 0
