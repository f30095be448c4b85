"""An AWQ-4bit checkpoint folder, written with the compressed-tensors library from a Step1 folder.

The format is what llmcompressor writes for the official AWQ release: config.json
with a compressed-tensors ``quantization_config`` (``format: pack-quantized``, one
config group targeting ``Linear`` with 4-bit int weights, group strategy, no
activation quantization, ``lm_head`` ignored; embeddings are not Linear, so they
stay as they are) and per projection ``weight_packed`` (eight 4-bit values per
int32), ``weight_scale``, ``weight_zero_point`` (packed too, asymmetric, as
upstream's default scheme W4A16_ASYM) and ``weight_shape``.

What is not reproduced: AWQ's calibration (activation-aware scales folded into
the weights before rounding). It changes the values, not the format; here the
group scales and zero points are the min/max ones compressed-tensors computes,
so the stored weights are round-to-nearest 4-bit versions of the source weights.
The group size is 128 where every input width allows it; a tiny model with
64-wide layers gets the largest power of two that divides them (64), recorded
in its config like any other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

OFFICIAL_GROUP_SIZE = 128
WEIGHTS_FILE = "model-00001.safetensors"
COPIED_FILES = ("tokenizer.model", "tokenizer_config.json")


def group_size_for(in_features: list[int], preferred: int = OFFICIAL_GROUP_SIZE) -> int:
    """The largest power of two ≤ ``preferred`` that divides every input width."""
    size = preferred
    while size > 1 and any(n % size for n in in_features):
        size //= 2
    return size


def write_awq_folder(source_dir: Path | str, target_dir: Path | str, *, group_size: int | None = None) -> Path:
    """Quantize the Step1 checkpoint in ``source_dir`` to W4A16 and write it to ``target_dir``.

    The tokenizer files are copied along; the decoder folder is not (the model
    store takes it from Step-Audio-EditX/). Deterministic: the same source gives
    the same bytes.
    """
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp

    from runners.models.step1 import Step1ForCausalLM

    source_dir, target_dir = Path(source_dir), Path(target_dir)
    model = Step1ForCausalLM.from_pretrained(str(source_dir), dtype=torch.bfloat16, local_files_only=True)
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    size = group_size or group_size_for([m.in_features for m in linears])
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=size)
    config = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
        ignore=["lm_head"],
        format="pack-quantized",
        quantization_status=QuantizationStatus.FROZEN,
    )
    apply_quantization_config(model, config, show_progress=False)
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None:
            continue
        scale, zero_point = compute_dynamic_scales_and_zp(module.weight.data, scheme.weights, module)
        module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
        module.weight_zero_point.data.copy_(zero_point.reshape(module.weight_zero_point.shape))
        module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    compressor.remove_decompression_hook(model)

    target_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(target_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": {name: WEIGHTS_FILE for name in sorted(tensors)}}
    (target_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    shutil.copyfile(source_dir / "config.json", target_dir / "config.json")
    compressor.update_config(str(target_dir))
    for name in COPIED_FILES:
        if (source_dir / name).is_file():
            shutil.copyfile(source_dir / name, target_dir / name)
    return target_dir


def awq_bound(scale: torch.Tensor, original: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per weight, the largest error 4-bit round-to-nearest allows in bf16 arithmetic.

    Half the group's step, plus 2^-5 of a step because w / step + zero point (up to 2^3 in
    size) is computed in bf16 (2^-8 relative), plus the bf16 rounding of the dequantized value.
    """
    step = scale.float().repeat_interleave(group_size, dim=1)[:, : original.shape[1]]
    return step * (0.5 + 2.0**-5) + original.abs().float() * 2.0**-8 + 1e-6


def dequantized_error(source_dir: Path | str, awq_dir: Path | str) -> dict[str, float]:
    """Per projection, the largest |dequantized - source| in units of that group's bound (≤ 1 is within 4 bits)."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    source = load_file(str(Path(source_dir) / WEIGHTS_FILE))
    packed = load_file(str(Path(awq_dir) / WEIGHTS_FILE))
    qcfg = QuantizationConfig.model_validate(json.loads((Path(awq_dir) / "config.json").read_text())["quantization_config"])
    scheme = qcfg.config_groups["group_0"]
    compressor = BaseCompressor.get_value_from_registry(qcfg.format)
    out: dict[str, float] = {}
    for name in sorted(k.removesuffix(".weight_packed") for k in packed if k.endswith(".weight_packed")):
        local = {key.removeprefix(name + "."): packed[key] for key in packed if key.startswith(name + ".")}
        dense = compressor.decompress(local, scheme)["weight"].float()
        original = source[name + ".weight"].float()
        bound = awq_bound(local["weight_scale"], original, scheme.weights.group_size)
        out[name] = float(((dense - original).abs() / bound).max())
    return out
