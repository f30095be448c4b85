"""Tiny random-weight ``Step-Audio-Tokenizer/`` folder in the official layout.

Writes, offline and in a few seconds:

- ``<funasr_id>/``: a FunASR model folder (``config.yaml``, ``configuration.json``,
  ``model.pt``, ``am.mvn``, ``tokens.json``) for a 2-block, 64-wide
  ``ParaformerStreaming`` built from FunASR's own class registry, so the real
  loader (``funasr.AutoModel``) reads it exactly like the released folder;
- ``linguistic_tokenizer.npy``: 1024 k-means centroids of the encoder width;
- ``speech_tokenizer_v1.onnx``: a small stand-in with the official input names
  (``feats`` (1, 128, T) float32, ``feats_length`` (1,) int32) that emits one
  code in 0..4095 per 4 mel frames (25 Hz), like CosyVoice's S3 tokenizer v1.

Everything is derived from ``seed`` with private random generators, so the
same seed gives the same numbers (tests and parity data rely on that) and the
caller's global RNG state is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

ENCODER_WIDTH = 64
N_MELS_FBANK = 80
LFR_M = 7
LFR_N = 6
FEAT_DIM = N_MELS_FBANK * LFR_M  # 560 after low-frame-rate stacking
KMEANS_CODES = 1024
VQ06_CODES = 4096
WHISPER_MELS = 128

# Same section names and frontend settings as the released paraformer-large
# online config; only the sizes are small. No ``dither`` key: like the real
# config, the front end's default (1.0) applies unless the loader turns it off.
_TOKENS = ["<blank>", "<s>", "</s>", "a", "b", "c", "d", "e", "<unk>"]


def _config_yaml(width: int) -> str:
    return f"""# tiny random-weight stand-in for the paraformer-large online model (runners.models.tiny)
model: ParaformerStreaming
model_conf:
    ctc_weight: 0.0
    lsm_weight: 0.1
    length_normalized_loss: true
    predictor_weight: 1.0
    predictor_bias: 1
    sampling_ratio: 0.75

encoder: SANMEncoderChunkOpt
encoder_conf:
    output_size: {width}
    attention_heads: 4
    linear_units: {2 * width}
    num_blocks: 2
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    attention_dropout_rate: 0.1
    input_layer: pe_online
    pos_enc_class: SinusoidalPositionEncoder
    normalize_before: true
    kernel_size: 11
    sanm_shfit: 0
    selfattention_layer_type: sanm
    chunk_size:
    - 12
    - 15
    stride:
    - 8
    - 10
    pad_left:
    - 0
    - 0
    encoder_att_look_back_factor:
    - 4
    - 4
    decoder_att_look_back_factor:
    - 1
    - 1

decoder: ParaformerSANMDecoder
decoder_conf:
    attention_heads: 4
    linear_units: {2 * width}
    num_blocks: 1
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    self_attention_dropout_rate: 0.1
    src_attention_dropout_rate: 0.1
    att_layer_num: 1
    kernel_size: 11
    sanm_shfit: 5

predictor: CifPredictorV2
predictor_conf:
    idim: {width}
    threshold: 1.0
    l_order: 1
    r_order: 1
    tail_threshold: 0.45

frontend: WavFrontendOnline
frontend_conf:
    fs: 16000
    window: hamming
    n_mels: {N_MELS_FBANK}
    frame_length: 25
    frame_shift: 10
    lfr_m: {LFR_M}
    lfr_n: {LFR_N}

tokenizer: CharTokenizer
tokenizer_conf:
    unk_symbol: <unk>
    split_with_space: true

normalize: null
"""


def _configuration_json() -> dict[str, object]:
    """The ModelScope descriptor FunASR reads to find the files of the folder."""
    return {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"token_list": "tokens.json"},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    }


def _am_mvn(shift: np.ndarray, scale: np.ndarray) -> str:
    """Kaldi nnet1 text CMVN: features are ``(x + shift) * scale``."""
    dim = len(shift)

    def row(values: np.ndarray) -> str:
        return " ".join(f"{v:.6f}" for v in values)

    return (
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {row(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {row(scale)} ]\n"
        "</Nnet>\n"
    )


def _build_paraformer(config_path: Path, vocab: int, seed: int) -> nn.Module:
    """Instantiate the configured model through FunASR's registry with seeded weights."""
    import yaml

    from funasr.register import tables

    conf = yaml.safe_load(config_path.read_text())
    model_cls = tables.model_classes.get(conf["model"])
    if model_cls is None:  # pragma: no cover - only with a broken FunASR install
        raise RuntimeError(f"FunASR has no model class {conf['model']!r}")
    kwargs = dict(conf)
    kwargs.update(conf.get("model_conf") or {})
    kwargs["vocab_size"] = vocab
    kwargs["input_size"] = FEAT_DIM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(**kwargs)
    return model.eval()


class _TinySpeechTokenizer(nn.Module):
    """Stand-in for the S3 tokenizer: 4× time reduction, argmax over 4096 codes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(WHISPER_MELS, 32, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(32, 32, kernel_size=3, stride=2, padding=1)
        self.proj = nn.Linear(32, VQ06_CODES)

    def forward(self, feats: torch.Tensor, feats_length: torch.Tensor) -> torch.Tensor:
        # Frames past feats_length are zeroed, as the real model masks them; this
        # also keeps feats_length a live graph input.
        frames = torch.arange(feats.shape[2], device=feats.device)
        valid = (frames[None, :] < feats_length[:, None].to(frames.dtype)).to(feats.dtype)
        x = feats * valid[:, None, :]
        x = torch.nn.functional.gelu(self.conv1(x))
        x = torch.nn.functional.gelu(self.conv2(x))
        return self.proj(x.transpose(1, 2)).argmax(dim=-1)  # (1, ceil(T/4)) int64


def _export_speech_tokenizer(path: Path, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        module = _TinySpeechTokenizer().eval()
    feats = torch.zeros(1, WHISPER_MELS, 64)
    length = torch.tensor([64], dtype=torch.int32)
    torch.onnx.export(
        module,
        (feats, length),
        str(path),
        input_names=["feats", "feats_length"],
        output_names=["indices"],
        dynamic_axes={"feats": {2: "T"}, "indices": {1: "T4"}},
        opset_version=17,
        dynamo=False,
    )


def write_tokenizer_part(tokenizer_dir: Path, funasr_id: str, seed: int = 0) -> None:
    """Write a complete random-weight ``Step-Audio-Tokenizer/`` folder under ``tokenizer_dir``."""
    tokenizer_dir = Path(tokenizer_dir)
    funasr_dir = tokenizer_dir / funasr_id
    funasr_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    config_path = funasr_dir / "config.yaml"
    config_path.write_text(_config_yaml(ENCODER_WIDTH))
    (funasr_dir / "configuration.json").write_text(json.dumps(_configuration_json(), indent=2) + "\n")
    (funasr_dir / "tokens.json").write_text(json.dumps(_TOKENS, ensure_ascii=False) + "\n")
    # Log-mel fbank of 16-bit-scaled speech sits roughly in 5..20; a per-dimension
    # shift/scale of that size keeps the tiny encoder's inputs near unit range.
    shift = -rng.uniform(8.0, 14.0, FEAT_DIM)
    scale = rng.uniform(0.2, 0.4, FEAT_DIM)
    (funasr_dir / "am.mvn").write_text(_am_mvn(shift, scale))

    model = _build_paraformer(config_path, len(_TOKENS), seed)
    torch.save(model.state_dict(), funasr_dir / "model.pt")

    # Encoder outputs are layer-normalized (about unit variance per dimension),
    # so centroids drawn from N(0, 1) spread codes over the whole codebook.
    centroids = rng.standard_normal((KMEANS_CODES, ENCODER_WIDTH)).astype(np.float32)
    np.save(tokenizer_dir / "linguistic_tokenizer.npy", centroids)

    _export_speech_tokenizer(tokenizer_dir / "speech_tokenizer_v1.onnx", seed)
