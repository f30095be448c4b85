"""Record tokenizer_codes.json by running StepFun's own tokenizer code on the tiny checkpoint.

Not part of the test suite; run by hand (see README.md, "Audio tokenizer"):

    M=/work/.mirror/stepfun-ai+Step-Audio-EditX/repo; mkdir -p /tmp/refrun
    git -C $M archive HEAD funasr_detach tokenizer.py utils.py model_loader.py | tar -x -C /tmp/refrun
    # CPU-only: model.cuda() -> .cpu() (auto_model.py), input[i].cuda() -> .cpu() (wav_frontend.py),
    # device=0 -> device="cpu" and CUDAExecutionProvider -> CPUExecutionProvider (tokenizer.py)
    # openai-whisper is sdist-only: `pip wheel --no-deps` it in a scratch venv, then
    pip install --target /tmp/ref-tok --no-deps openai_whisper-20240930-py3-none-any.whl sox==1.5.0 librosa==0.10.2.post1
    python -c "from runners.models.tiny import build_tiny_model_root as b; b('/tmp/tiny0', seed=0, parts={'tokenizer'})"
    .venv/bin/python tests/data/parity/tokenizer_record_reference.py /tmp/tiny0 tests/data/parity/tokenizer_codes.json
"""
import importlib.util, json, sys, os
from pathlib import Path
REPO = Path(__file__).resolve().parents[3]
sys.path[:0] = ["/tmp/refrun", "/tmp/ref-tok", str(REPO)]
import numpy as np, soundfile as sf, torch, torchaudio

# torchaudio 2.8 in the official image (no FFmpeg/SoX libraries) saves through the
# soundfile backend: a float32 tensor becomes a 32-bit float WAV. torchaudio 2.11
# here needs torchcodec, so emulate exactly that backend for in-memory files.
_real_save, _real_load = torchaudio.save, torchaudio.load
def _save(uri, src, sample_rate, channels_first=True, format=None, **kw):
    assert src.dtype == torch.float32 and format == "wav" and not kw
    data = src.T.numpy() if channels_first else src.numpy()
    sf.write(uri, data, sample_rate, format="WAV", subtype="FLOAT")
def _load(uri, *a, **kw):
    data, rate = sf.read(uri, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate
torchaudio.save, torchaudio.load = _save, _load

import whisper, librosa
from tokenizer import StepAudioTokenizer
from model_loader import ModelSource

spec = importlib.util.spec_from_file_location("t_at", REPO / "tests" / "test_audio_tokenizer.py")
tmod = importlib.util.module_from_spec(spec); spec.loader.exec_module(tmod)

root = sys.argv[1]
tok = StepAudioTokenizer(os.path.join(root, "Step-Audio-Tokenizer"), model_source=ModelSource.LOCAL)
frontend = tok.funasr_model.kwargs["frontend"]
frontend.dither = 0.0  # the reference run dithers randomly; off for a reproducible record

out = {"librosa": librosa.__version__, "whisper": whisper.__version__, "torch": torch.__version__, "cases": {}}
for name in tmod.PARITY_CASES:
    x, rate = tmod.parity_signal(name)
    wav = torch.from_numpy(x)[None, :]
    # tts.py::preprocess_prompt_wav: peak limit 0.6 before any feature
    norm = torch.max(torch.abs(wav), dim=1, keepdim=True)[0]
    if norm > 0.6:
        wav = wav / norm * 0.6
    if rate < 16000:
        # wav2token asserts on input below 16 kHz; resample up first, exactly as our engine does
        wav = torchaudio.functional.resample(wav, rate, 16000)
        rate = 16000
    prepared = tok.preprocess_wav(wav, rate)
    _, vq02, vq06 = tok.wav2token(wav, rate)
    mel = whisper.log_mel_spectrogram(prepared.squeeze(0)[:16000], n_mels=128)
    out["cases"][name] = {
        "prepared_samples": int(prepared.shape[-1]),
        "vq02": [int(v) for v in vq02],
        "vq06": [int(v) for v in vq06],
        "token_string_prefix": tok.merge_vq0206_to_token_str(vq02, vq06)[:200],
        "mel_first_second_shape": list(mel.shape),
        "mel_samples": {f"{b},{f}": float(mel[b, f]) for b, f in ((0, 0), (5, 17), (40, 50), (64, 99), (127, 3))},
        "mel_mean": float(mel.double().mean()),
    }
filters = np.load(os.path.join(os.path.dirname(whisper.__file__), "assets", "mel_filters.npz"))["mel_128"]
picks = [(b, int(filters[b].argmax()) + d) for b in (0, 1, 10, 64, 127) for d in (0, 1)]
out["mel_filters_128"] = {f"{b},{f}": float(filters[b, f]) for b, f in picks}
out["mel_filters_128_sum"] = float(filters.astype(np.float64).sum())
x, _ = tmod.parity_signal("speechlike_16k")
mel = whisper.log_mel_spectrogram(torch.from_numpy(x[: 16000 + 123]), n_mels=128)
out["plain_mel"] = {"shape": list(mel.shape), "mean": float(mel.double().mean()),
                    "values": {f"{b},{f}": float(mel[b, f]) for b, f in ((0, 0), (3, 7), (50, 60), (100, 99), (127, 98))}}
open(sys.argv[2], "w").write(json.dumps(out) + "\n")
