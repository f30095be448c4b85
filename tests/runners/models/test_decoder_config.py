"""cosyvoice.yaml: read as data (tags never executed), typed, and checked against the official naming.

Official numbers (OFFICIAL_FLOW in runners/models/tiny/decoder.py), and how sure we are:
- confirmed by the upstream code: DiT in_channels 320 (= 4 × 80), hidden 512, depth 16,
  8 heads × 64 (streaming cache buffers (16, 2, 8, T, 128) and (16, 2, 1024, 2)),
  encoder width 512, pre_lookahead_len 3, up stride 2, vocab 5121 (1024 + 4096 + pad),
  80 mel bins, 192-d speaker vector, CFG rate 0.7, mel_conf (UPSTREAM.md §1.3).
- confirmed by the released flow.pt size (615,274,252 bytes, see below) together with
  the architecture: the total parameter count, hence linear_units 2048, mlp_ratio 4.0,
  6 + 4 conformer blocks, hidden sizes, vocabulary.
- inferred from public ports of the same checkpoint (no byte-level evidence):
  encoder attention_heads 8 (the file size cannot tell 4 from 8), key_bias true,
  dropout values (unused at inference), the exact tag/module paths in the yaml.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from runners.models.decoder.config import DecoderConfigError, load_decoder_config, parse_decoder_config, read_tagged_yaml
from runners.models.decoder.flow import CausalMaskedDiffWithXvec, expected_flow_state_shapes
from runners.models.store import DECODER_DIR, LLM_DIR
from runners.models.tiny.decoder import OFFICIAL_FLOW, TINY_FLOW, render_decoder_yaml

OFFICIAL_FLOW_PT_BYTES = 615_274_252  # size of the released CosyVoice-300M-25Hz/flow.pt

# A few names and shapes of the released flow.pt, as public loaders of that file read them.
OFFICIAL_KEYS = {
    "input_embedding.embedding.weight": (5121, 256),
    "spk_embed_affine_layer.weight": (80, 192),
    "encoder_proj.weight": (80, 512),
    "encoder.embed.out.0.weight": (512, 512),
    "encoder.embed.out.1.bias": (512,),
    "encoder.pre_lookahead_layer.conv1.weight": (512, 512, 4),
    "encoder.up_layer.conv.weight": (512, 512, 5),
    "encoder.encoders.5.self_attn.pos_bias_u": (8, 64),
    "encoder.encoders.0.self_attn.linear_k.bias": (512,),
    "encoder.up_encoders.3.feed_forward.w_1.weight": (2048, 512),
    "encoder.after_norm.weight": (512,),
    "decoder.estimator.t_embedder.mlp.0.weight": (512, 256),
    "decoder.estimator.in_proj.weight": (512, 320),
    "decoder.estimator.blocks.0.attn.q_norm.weight": (64,),
    "decoder.estimator.blocks.0.conv.block.1.weight": (512, 512, 3),
    "decoder.estimator.blocks.0.conv.block.3.weight": (512,),
    "decoder.estimator.blocks.15.adaLN_modulation.1.weight": (4608, 512),
    "decoder.estimator.blocks.15.mlp.fc1.weight": (2048, 512),
    "decoder.estimator.final_layer.linear.weight": (80, 512),
}

HIFT_STUB = {"in_channels": 80, "sampling_rate": 24000}


@pytest.fixture(scope="module")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runners.models.tiny import build_tiny_model_root

    root = build_tiny_model_root(tmp_path_factory.mktemp("tiny-decoder"), seed=0, parts=("decoder",))
    return root / LLM_DIR / DECODER_DIR


def _official_yaml() -> str:
    return render_decoder_yaml(OFFICIAL_FLOW, HIFT_STUB)


def test_tiny_yaml_reads_into_typed_numbers(tiny_decoder_dir: Path) -> None:
    cfg = load_decoder_config(tiny_decoder_dir)
    flow = cfg.flow
    assert flow.vocab_size == flow.embedding_vocab_size == 5121
    assert (flow.input_size, flow.output_size, flow.spk_embed_dim) == (32, 80, 192)
    assert flow.encoder.output_size == 32 and flow.encoder.num_blocks == 1 and flow.encoder.num_up_blocks == 1
    assert flow.encoder.pre_lookahead_len == 3 and flow.encoder.up_stride == 2
    assert (flow.estimator.depth, flow.estimator.num_heads, flow.estimator.head_dim) == (2, 2, 16)
    assert flow.inference_cfg_rate == pytest.approx(0.7)
    assert cfg.sample_rate == 24000 and cfg.mel.hop_size == 480 and cfg.mel.num_mels == 80
    # the hift section is handed on as plain numbers under the official key names
    assert cfg.hift["upsample_rates"] == [8, 5, 3] and cfg.hift["f0_predictor"]["num_class"] == 1
    assert cfg.hift_class == "HiFTGenerator"


def test_tiny_yaml_is_in_the_official_form(tiny_decoder_dir: Path) -> None:
    text = (tiny_decoder_dir / "cosyvoice.yaml").read_text()
    for tag in (
        "flow: !new:stepvocoder.cosyvoice2.flow.flow.CausalMaskedDiffWithXvec",
        "!new:stepvocoder.cosyvoice2.embedding.dual_codebook.DualCodebookEmbedding",
        "!new:stepvocoder.cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2",
        "!new:stepvocoder.cosyvoice2.flow.flow_matching.CausalConditionalCFM",
        "!new:stepvocoder.cosyvoice2.flow.decoder_dit.DiT",
        "hift: !new:stepvocoder.cosyvoice2.hifigan.generator.HiFTGenerator",
    ):
        assert tag in text
    assert (tiny_decoder_dir / "FLOW_VERSION").read_text().strip()


def test_official_numbers_give_the_official_keys_and_shapes() -> None:
    cfg = parse_decoder_config(_official_yaml()).flow
    shapes = expected_flow_state_shapes(cfg)
    for key, shape in OFFICIAL_KEYS.items():
        assert shapes[key] == shape, key
    params = sum(math.prod(s) for s in shapes.values())
    assert len(shapes) == 605 and params == 153_754_096
    # fp32 data plus the zip/pickle records of 605 tensors: any missing or extra layer would be megabytes off
    assert 0 < OFFICIAL_FLOW_PT_BYTES - 4 * params < 400_000


def test_our_module_has_exactly_the_official_state_dict() -> None:
    cfg = parse_decoder_config(_official_yaml()).flow
    with torch.device("meta"):
        model = CausalMaskedDiffWithXvec(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected_flow_state_shapes(cfg)


def test_refs_are_resolved_and_arithmetic_works() -> None:
    text = _official_yaml().replace("    spk_embed_dim: 192", "    spk_embed_dim: !ref <spk_dim>")
    text = text.replace("            hidden_size: 512", "            hidden_size: !ref <half> * 2")
    text = text.replace("            out_channels: 80", "            out_channels: !ref <flow[output_size]>")
    text = "spk_dim: 192\nhalf: 256\n" + text
    cfg = parse_decoder_config(text)
    assert cfg.flow.spk_embed_dim == 192 and cfg.flow.estimator.hidden_size == 512
    assert cfg.flow.estimator.out_channels == 80
    assert cfg.extra["half"] == 256


def test_tags_are_data_never_code(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    doc = read_tagged_yaml(f"a: !apply:pathlib.Path.touch [{str(marker)!r}]\nb: !name:os.system\n")
    assert doc["a"].kind == "apply" and doc["b"].target == "os.system"
    assert not marker.exists()
    with pytest.raises(DecoderConfigError, match="not valid yaml"):
        read_tagged_yaml(f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.split("\nflow:")[0] + "\nhift: " + t.split("\nhift: ")[1], "missing section 'flow'"),
        (lambda t: t.split("\nhift: ")[0], "missing section 'hift'"),
        (lambda t: t.replace("flow.flow.CausalMaskedDiffWithXvec", "flow.flow.MaskedDiffWithXvec"), "does not implement"),
        (lambda t: t.replace("decoder_dit.DiT", "decoder.ConditionalDecoder"), "does not implement"),
        (lambda t: t.replace("depth: 16", 'depth: "sixteen"'), "estimator.depth' must be a number"),
        (lambda t: t.replace("num_blocks: 6", "num_blocks: true"), "num_blocks' must be a number"),
        (lambda t: t.replace("head_dim: 64", "head_dim: 6.5"), "whole number"),
        (lambda t: t.replace("in_channels: 320", "in_channels: 240"), "4 × output_size"),
        (lambda t: t.replace("spk_embed_dim: 192", "spk_embed_dim: !ref <nowhere>"), "points at nothing"),
        (lambda t: t.replace("pos_enc_layer_type: \"rel_pos_espnet\"", "pos_enc_layer_type: \"rope\""), "not supported"),
        (lambda t: t + "\n  bad: [unclosed\n", "not valid yaml"),
        (lambda t: "- just\n- a list\n", "mapping at the top level"),
    ],
)
def test_broken_yaml_is_rejected_with_a_clear_error(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecoderConfigError, match=message):
        parse_decoder_config(edit(_official_yaml()))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DecoderConfigError, match="does not exist"):
        load_decoder_config(tmp_path)


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cosyvoice.yaml"
    path.write_text(render_decoder_yaml(TINY_FLOW, HIFT_STUB).replace("hidden_size: 32", "hidden_size: -1"))
    with pytest.raises(DecoderConfigError, match=r"cosyvoice\.yaml.*hidden_size' must be positive"):
        load_decoder_config(path)
