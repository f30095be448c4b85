"""Quantized variants of the LLM (only the LLM: the tokenizers, flow and vocoder stay as they are).

``EDITX_LLM_QUANTIZATION`` picks one; every variant goes through transformers'
own quantization support on our native Step1, so the layers are the libraries'
modules (bitsandbytes ``Linear8bitLt`` / ``Linear4bit``, or plain ``Linear``
for AWQ) and the decode loop is the same for all of them:

- ``none``: the checkpoint as it is, in the LLM dtype.
- ``int8``: bitsandbytes LLM.int8 (8-bit weights, outlier columns in 16 bit), quantized at load.
- ``nf4`` (upstream also says ``int4``): bitsandbytes 4-bit NormalFloat with double
  quantization and the LLM dtype as compute dtype, quantized at load.
- ``awq`` (upstream: ``awq-4bit``): the pre-quantized AWQ-4bit checkpoint folder in the
  compressed-tensors format that llmcompressor writes (W4A16, group 128, ``lm_head`` and
  the embeddings kept). transformers has no 4-bit matmul kernel for this format, so the
  weights are dequantized to the LLM dtype while they load: the gain is a 3× smaller
  download and disk folder, not run-time memory (for that, use ``nf4``).

``lm_head`` and the embeddings stay unquantized in every variant (the bitsandbytes
variants name ``lm_head`` among the modules to skip; the AWQ checkpoint ignores it).
Only the decoder layers' seven projections per layer are quantized: those are the
"quantized linear layers" whose memory :func:`weight_memory` reports separately.
A projection whose shape a bitsandbytes CPU kernel cannot take (:func:`bnb_cpu_refusal`)
stays unquantized on the CPU, with a logged note; the official shapes fit every path.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:  # importing the model pulls in transformers; the config only needs the names
    from runners.step1 import Step1ForCausalLM

log = logging.getLogger("editx.quantization")

Quantization = Literal["none", "int8", "nf4", "awq"]
VARIANTS: tuple[Quantization, ...] = ("none", "int8", "nf4", "awq")
ALIASES: dict[str, Quantization] = {"int4": "nf4", "awq-4bit": "awq"}  # upstream's --quantization spellings
# bitsandbytes' 4-bit quantization block (Params4bit's default; transformers' config does not change it).
NF4_BLOCKSIZE = 64
# Output rows per tile of bitsandbytes' packed 4-bit CPU kernel (AVX512-BF16 CPUs).
NF4_CPU_PACK_ROWS = 32
# bitsandbytes weights are not moved between devices by the engine (not verified on a GPU here):
# an idle engine with these variants unloads instead of offloading.
UNLOADS_INSTEAD_OF_OFFLOAD: frozenset[str] = frozenset({"int8", "nf4"})


def parse_quantization(value: str | None) -> Quantization:
    """The variant named by ``value`` (upstream spellings accepted); a clear error for anything else."""
    name = (value or "none").strip().lower()
    name = ALIASES.get(name, name)
    if name not in VARIANTS:
        raise ValueError(
            f"unknown EDITX_LLM_QUANTIZATION {value!r}; choose one of none, int8, nf4 (alias int4), awq (alias awq-4bit)"
        )
    return name  # type: ignore[return-value]


class _FirstOnly(logging.Filter):
    """Let a repeated bitsandbytes notice through once: its int8 matmul logs a warning on every call
    whose inputs are not float16 (every layer, every decode step), which would flood the live log."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "inputs will be cast" not in message:
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _quiet_bitsandbytes() -> None:
    target = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _FirstOnly) for f in target.filters):
        target.addFilter(_FirstOnly())


def offload_supported(variant: str) -> bool:
    """Whether an idle engine may move this LLM to CPU memory (otherwise it unloads it)."""
    return variant not in UNLOADS_INSTEAD_OF_OFFLOAD


def cuda_graphs_mode(variant: str, mode: str) -> str:
    """EDITX_CUDA_GRAPHS as it applies to this variant: ``auto`` means off for int8 and nf4.

    bitsandbytes' int8 matmul picks its outlier columns from each input at run time, which a
    captured graph would freeze, and neither bitsandbytes path was checked under graph capture
    on a GPU here. ``1`` is left to the operator (the graph decoder checks its first replays
    against the eager step and falls back).
    """
    if mode == "auto" and variant in ("int8", "nf4"):
        return "0"
    return mode


def transformers_config(  # noqa: ANN201 - a transformers config or None
    variant: Quantization, dtype: torch.dtype, keep: list[str] | None = None
):
    """The transformers quantization config of a variant (None for ``none``).

    ``keep``: module names (``model.layers.0.self_attn.k_proj``) that bitsandbytes leaves as they are,
    besides ``lm_head``. A skip list replaces transformers' default one, so ``lm_head`` is always named.
    """
    if variant == "none":
        return None
    if variant in ("int8", "nf4"):
        from transformers import BitsAndBytesConfig

        skip = ["lm_head", *(keep or [])]
        if variant == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=skip,
        )
    from transformers import CompressedTensorsConfig

    # The checkpoint's own config.json describes the scheme; this only asks for dequantization at load.
    return CompressedTensorsConfig(dequantize=True)


def bnb_cpu_refusal(variant: Quantization, out_features: int, in_features: int) -> str | None:
    """Why some bitsandbytes CPU path cannot run a ``(out_features, in_features)`` weight in ``variant``;
    None when every one can.

    Read from bitsandbytes 0.50. ``nf4``: on a CPU with AVX512-BF16, ``Linear4bit`` repacks its
    weight on the first inference call for a fused kernel that works in tiles of 32 output rows
    and whole 64-value quantization blocks per row (``_convert_weight_packed_for_cpu`` asserts
    "N must be divisible by block_n" and reshapes the block scales to rows × blocks; the kernel
    then steps through K one block at a time). Other CPUs dequantize and call
    ``torch.nn.functional.linear``, which takes any shape. The rule holds on every CPU all the
    same, so the same layers are quantized whichever CPU loads the model. ``int8``: the int8
    matmul is ``torch._int_mm`` on AVX-512 CPUs and a float32 matmul elsewhere, any shape either way.
    """
    if variant != "nf4":
        return None
    if out_features % NF4_CPU_PACK_ROWS:
        return f"{out_features} output features are not a multiple of {NF4_CPU_PACK_ROWS}"
    if in_features % NF4_BLOCKSIZE:
        return f"{in_features} input features are not a multiple of the {NF4_BLOCKSIZE}-value 4-bit block"
    return None


def kept_unquantized(config: dict[str, object], variant: Quantization, device: torch.device | str) -> dict[str, str]:
    """The decoder projections that load unquantized for this variant on this device, each with the reason.

    Only the CPU is limited (:func:`bnb_cpu_refusal`): bitsandbytes' CUDA path has no such repacking and
    falls back to dequantize + matmul for shapes its fast kernels skip (read from its source, not run on a
    GPU here), so nothing is kept there.
    """
    from runners.step1.configuration import expected_state_shapes

    if variant not in ("int8", "nf4") or torch.device(device).type != "cpu":
        return {}
    kept: dict[str, str] = {}
    for name, shape in expected_state_shapes(config).items():
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            out_features, in_features = shape
            reason = bnb_cpu_refusal(variant, out_features, in_features)
            if reason is not None:
                kept[name.removesuffix(".weight")] = reason
    return kept


def _note_kept(variant: Quantization, kept: dict[str, str]) -> None:
    """One log line for the layers kept unquantized, grouped by projection and reason (not one per layer)."""
    groups: dict[tuple[str, str], int] = {}
    for name, reason in kept.items():
        key = (name.rsplit(".", 1)[-1], reason)
        groups[key] = groups.get(key, 0) + 1
    parts = [f"{proj} of {count} layer(s) ({reason})" for (proj, reason), count in sorted(groups.items())]
    log.warning("%s: %d projection(s) stay unquantized, their shape does not fit bitsandbytes' CPU 4-bit kernel: %s",
                variant, len(kept), "; ".join(parts))


def load_step1(
    llm_dir: Path | str,
    variant: Quantization = "none",
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> "Step1ForCausalLM":
    """Load Step1 from a local folder in the given variant, on ``device``; never reaches a hub.

    For ``awq`` the folder must be the AWQ checkpoint (its config.json names the
    compressed-tensors quantization); for the others it is the ordinary checkpoint.
    """
    from runners.step1 import Step1ForCausalLM

    device = torch.device(device)
    llm_dir = Path(llm_dir)
    if variant == "awq":
        _check_awq_folder(llm_dir)
    kept: dict[str, str] = {}
    if variant in ("int8", "nf4"):
        import json

        kept = kept_unquantized(json.loads((llm_dir / "config.json").read_text()), variant, device)
    quant = transformers_config(variant, dtype, keep=sorted(kept))
    if quant is None:
        model = Step1ForCausalLM.from_pretrained(str(llm_dir), dtype=dtype, local_files_only=True)
        return model.to(device)
    kwargs: dict[str, object] = {"quantization_config": quant}
    if kept:
        _note_kept(variant, kept)
    if variant in ("int8", "nf4"):
        _quiet_bitsandbytes()
        # bitsandbytes quantizes while the weights are placed: name the device up front.
        kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else str(device)}
    with warnings.catch_warnings():
        # For awq, transformers says the checkpoint's own quantization_config wins and only the loading
        # option (dequantize) is taken from ours: exactly what is meant.
        warnings.filterwarnings("ignore", message=".*already has a `quantization_config` attribute.*")
        model = Step1ForCausalLM.from_pretrained(str(llm_dir), dtype=dtype, local_files_only=True, **kwargs)
    if variant == "awq":
        model = model.to(device)
    mem = weight_memory(model)
    log.info("LLM loaded as %s: %.1f MiB of weights (%.0f%% of bf16), decoder layers %.1f MiB",
             variant, mem.total_mb, 100 * mem.total_vs_bf16, mem.layers_mb)
    return model


def _check_awq_folder(llm_dir: Path) -> None:
    """Refuse, with the reason, a folder that is not a compressed-tensors checkpoint."""
    import json

    config_file = llm_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"the AWQ-4bit folder {llm_dir} has no config.json")
    quant = json.loads(config_file.read_text()).get("quantization_config") or {}
    method = quant.get("quant_method")
    if method != "compressed-tensors":
        raise ValueError(
            f"{config_file} does not describe an AWQ-4bit compressed-tensors checkpoint "
            f"(quantization_config.quant_method is {method!r}, expected 'compressed-tensors')"
        )


# ------------------------------------------------------------------ memory
@dataclass(frozen=True)
class WeightMemory:
    """The LLM's weight memory (MiB), and the same model in bf16 for comparison."""

    total_mb: float  # every parameter, buffer and quantization statistic of the LLM
    layers_mb: float  # the decoder layers' linear projections alone (what the variants quantize)
    bf16_total_mb: float
    bf16_layers_mb: float

    @property
    def total_vs_bf16(self) -> float:
        return self.total_mb / self.bf16_total_mb if self.bf16_total_mb else 0.0

    @property
    def layers_vs_bf16(self) -> float:
        return self.layers_mb / self.bf16_layers_mb if self.bf16_layers_mb else 0.0

    def as_dict(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in asdict(self).items()}
        out["total_vs_bf16"] = round(self.total_vs_bf16, 4)
        out["layers_vs_bf16"] = round(self.layers_vs_bf16, 4)
        return out


def _tensors_of(module: torch.nn.Module) -> list[torch.Tensor]:
    """A module's own parameters and buffers plus the statistics bitsandbytes keeps beside them."""
    out: list[torch.Tensor] = []
    for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
        out.append(t)
        scb = getattr(t, "SCB", None)  # int8: one scale per output row
        if isinstance(scb, torch.Tensor):
            out.append(scb)
        state = getattr(t, "quant_state", None)  # nf4: absmax per block (itself quantized), code book
        while state is not None:
            out += [v for v in vars(state).values() if isinstance(v, torch.Tensor)]
            state = getattr(state, "state2", None)
    return out


def _mib(tensors: list[torch.Tensor], seen: set[tuple[str, int]]) -> float:
    total = 0
    for t in tensors:
        if t.device.type == "meta":
            continue
        key = (str(t.device), t.data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total / 2**20


def weight_memory(model: "Step1ForCausalLM") -> WeightMemory:
    """Measure the loaded LLM's weights; the bf16 figures come from its config's shapes."""
    from runners.step1 import expected_state_shapes

    seen: set[tuple[str, int]] = set()
    layers = 0.0
    for module in model.model.layers.modules():
        if module is not model.model.layers and not list(module.children()) and not _is_norm(module):
            layers += _mib(_tensors_of(module), seen)
    rest = sum(_mib(_tensors_of(m), seen) for m in model.modules())
    shapes = expected_state_shapes(model.config.to_dict())
    numel = {name: int(torch.Size(shape).numel()) for name, shape in shapes.items()}
    bf16_total = sum(numel.values()) * 2 / 2**20
    bf16_layers = sum(n for name, n in numel.items() if name.startswith("model.layers.") and "norm" not in name) * 2 / 2**20
    return WeightMemory(layers + rest, layers, bf16_total, bf16_layers)


def _is_norm(module: torch.nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm")


def quantized_layer_types(model: "Step1ForCausalLM") -> set[str]:
    """Class names of the decoder layers' projections (which library's layers run)."""
    return {type(m).__name__ for m in model.model.layers.modules() if not list(m.children()) and not _is_norm(m)}


def plain_projections(model: "Step1ForCausalLM") -> list[str]:
    """Names of the decoder projections that are plain ``Linear`` layers (all of them for ``none`` and ``awq``)."""
    return [f"model.layers.{name}" for name, m in model.model.layers.named_modules() if type(m) is torch.nn.Linear]


def llm_status(variant: str, model: "Step1ForCausalLM | None", idle_action: str) -> dict[str, object]:
    """The /status keys of the LLM variant: its name, weight memory (None until loaded), what idle does."""
    notes: list[str] = []
    if variant == "awq":
        notes.append("AWQ-4bit weights are dequantized to the LLM dtype at load (transformers has no 4-bit kernel "
                     "for this format): smaller download and disk, same run-time memory as 'none'")
    if variant in ("int8", "nf4") and model is not None:
        kept = plain_projections(model)
        if kept:
            notes.append(f"{len(kept)} decoder projection(s) stay unquantized, their shape does not fit "
                         f"bitsandbytes' CPU kernel (e.g. {kept[0]})")
    effective = idle_action
    if idle_action == "offload" and not offload_supported(variant):
        effective = "unload"
        notes.append(f"an idle {variant} LLM is unloaded instead of offloaded (bitsandbytes weights are not moved "
                     "between devices)")
    return {
        "llm_quantization": variant,
        "llm_weights": weight_memory(model).as_dict() if model is not None else None,
        "llm_quantization_note": "; ".join(notes) or None,
        "idle_action_effective": effective,
    }
