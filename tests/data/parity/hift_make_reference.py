"""Record upstream HiFT and CosyVoice-frontend outputs on the seeded tiny checkpoints.

Writes hift_wave.npz and features_mel.npz into OUTDIR. Needs, outside the project venv:
  REF=/tmp/hift-ref  holding stepvocoder/ extracted from the upstream repository
      (stepvocoder/__init__.py, cosyvoice2/{hifigan,utils,matcha,cli}/..., plus empty __init__.py files)
  /tmp/ref-voc-hift  pip --target install of librosa and its pure deps (numba, llvmlite, joblib, ...)
Run from the project root:
  PYTHONPATH=$REF:/tmp/ref-voc-hift:. .venv/bin/python tests/data/parity/hift_make_reference.py OUTDIR
"""

import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)

# openai-whisper is imported by the upstream frontend module but not used for these two features
sys.modules.setdefault("whisper", types.ModuleType("whisper"))

from stepvocoder.cosyvoice2.hifigan.generator import HiFTGenerator as RefHiFT  # noqa: E402
from stepvocoder.cosyvoice2.hifigan.f0_predictor import ConvRNNF0Predictor  # noqa: E402
from stepvocoder.cosyvoice2.matcha.audio import mel_spectrogram  # noqa: E402
from stepvocoder.cosyvoice2.cli.frontend import CosyVoiceFrontEnd  # noqa: E402

from runners.models.decoder.hift import expected_hift_state_shapes  # noqa: E402
from runners.models.tiny.vocoder import tiny_hift_section, write_campplus, write_hift  # noqa: E402

OFFICIAL = dict(
    in_channels=80, base_channels=512, nb_harmonics=8, sampling_rate=24000, nsf_alpha=0.1, nsf_sigma=0.003,
    nsf_voiced_threshold=10, upsample_rates=[8, 5, 3], upsample_kernel_sizes=[16, 11, 7],
    istft_params={"n_fft": 16, "hop_len": 4}, resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5]] * 3, source_resblock_kernel_sizes=[7, 7, 11],
    source_resblock_dilation_sizes=[[1, 3, 5]] * 3, lrelu_slope=0.1, audio_limit=0.99,
    f0_predictor={"num_class": 1, "in_channels": 80, "cond_channels": 512},
)


def ref_model(section):
    kw = {k: v for k, v in section.items() if k != "f0_predictor"}
    return RefHiFT(**kw, f0_predictor=ConvRNNF0Predictor(**section["f0_predictor"]))


# 1. naming: upstream's module at the official numbers has exactly our expected keys and shapes
ref_off = ref_model(OFFICIAL)
ref_shapes = {k: tuple(v.shape) for k, v in ref_off.state_dict().items()}
assert ref_shapes == expected_hift_state_shapes(OFFICIAL), "key/shape mismatch at official numbers"
print("official numbers: upstream keys == expected_hift_state_shapes:", len(ref_shapes), "keys,",
      sum(v.numel() for v in ref_off.state_dict().values()), "params")
del ref_off

# 2. the tiny hift.pt (seed 0) loads strictly into upstream's class
tmp = Path(tempfile.mkdtemp())
section = tiny_hift_section()
write_hift(tmp / "hift.pt", section, seed=0)
ref = ref_model(section)
ref.load_state_dict(torch.load(tmp / "hift.pt", map_location="cpu", weights_only=True), strict=True)
ref.eval()

SEED = 1234
T = 20
mel = torch.randn(1, 80, T, generator=torch.Generator().manual_seed(6)) * 2.0 - 5.0

# upstream draws torch.rand (start phases) then torch.randn_like (noise), then an unused randn_like:
# route them through one seeded generator, the same order our implementation draws in
gen = torch.Generator().manual_seed(SEED)
real_rand, real_randn_like = torch.rand, torch.randn_like


def fixed_rand(*size, device=None, **kw):
    return real_rand(*size, generator=gen).to(device)


def fixed_randn_like(x, **kw):
    return torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)


torch.rand, torch.randn_like = fixed_rand, fixed_randn_like
try:
    with torch.no_grad():
        f0 = ref.f0_predictor(mel)
    wave, source = ref.inference(mel)
finally:
    torch.rand, torch.randn_like = real_rand, real_randn_like
print("hift: wave", tuple(wave.shape), "absmax", float(wave.abs().max()), "voiced", float((f0 > 10).float().mean()))
np.savez_compressed(
    out_dir / "hift_wave.npz",
    mel=mel.numpy(), seed=np.int64(SEED), hift_seed=np.int64(0),
    f0=f0.numpy(), source=source.numpy(), wave=wave.numpy(),
)

# 3. frontend: mel (speech_feat) and CAM++ embedding through upstream's CosyVoiceFrontEnd
SR = 22050
n = int(0.41 * SR)
t = torch.arange(n) / SR
signal = 0.3 * torch.sin(2 * np.pi * 220 * t) + 0.2 * torch.sin(2 * np.pi * 1375 * t * (1 + 0.3 * t))
signal = signal + 0.05 * torch.randn(n, generator=torch.Generator().manual_seed(3))
signal = signal.float()[None]  # (1, N) as upstream passes it
# tts.py::preprocess_prompt_wav: scale so the peak is 0.6 when it is above 0.6 (this signal's peak is ~0.65)
norm = torch.max(torch.abs(signal), dim=1, keepdim=True)[0]
raw_signal = signal.clone()
if norm > 0.6:
    signal = signal / norm * 0.6
mel_conf = dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0, fmax=8000,
                center=False)
write_campplus(tmp / "campplus.onnx", seed=0)
front = CosyVoiceFrontEnd(mel_conf, campplus_model=str(tmp / "campplus.onnx"), speech_tokenizer_model="unused")
speech_feat, _ = front.extract_speech_feat(signal, SR)
embedding = front.extract_spk_embedding(signal, SR)
# the bare mel function on a 24 kHz signal too (no resampling involved)
sig24 = signal[0, : 24000 // 2] * 1.5
mel24 = mel_spectrogram(sig24[None], **mel_conf).transpose(1, 2)
print("features: speech_feat", tuple(speech_feat.shape), "embedding", tuple(embedding.shape), "mel24", tuple(mel24.shape))
np.savez_compressed(
    out_dir / "features_mel.npz",
    signal=raw_signal[0].numpy(), sample_rate=np.int64(SR), speech_feat=speech_feat.numpy(),
    signal_24k=sig24.numpy(), mel_24k=mel24.numpy(),
    embedding=embedding.numpy().astype(np.float32), campplus_seed=np.int64(0),
)
