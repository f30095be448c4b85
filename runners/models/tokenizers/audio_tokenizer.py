"""The dual-codebook audio tokenizer: waveform → vq02 + vq06 codes (UPSTREAM.md §1.3, §1.4).

- **vq02** (linguistic, 16.67 Hz, 1024 codes): the FunASR Paraformer-large
  *streaming* encoder is run over the whole clip in 240 ms chunks (chunk_size
  [0, 4, 5], encoder look-back 4 chunks, last chunk final), and each 512-d
  output frame is replaced by the index of its nearest k-means centroid.
- **vq06** (semantic, 25 Hz, 4096 codes): the CosyVoice v1 S3 tokenizer ONNX
  model on 128-bin Whisper log-mel features, ≤30 s per call.

The model files are the released ones, read unchanged from
``Step-Audio-Tokenizer/``. The FunASR model is loaded with upstream ``funasr``
from the local folder only (never a hub) and its streaming pieces
(``init_cache``, the online fbank front end, ``encode_chunk``) are driven here,
chunk by chunk, the way StepFun's ``infer_encoder`` drives them. The one
intended difference: the fbank front end's dither is switched off, so the same
audio always gives the same codes (the official run dithers with an unseeded
generator and agrees with itself only ~96 % of the time).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runners.audio import TOKENIZER_RATE, Audio, normalize_peak, resample, to_mono, trim_silence
from runners.models.store import ModelLayoutError, ModelPaths
from runners.models.tokenizers.onnx_runtime import OnnxModel
from runners.models.tokenizers.tokens import interleave, to_llm_ids, to_token_string
from runners.models.tokenizers.whisper_mel import log_mel_spectrogram

# Streaming encoder schedule used by the official tokenizer.
CHUNK_SIZE = (0, 4, 5)  # (left, current, right look-ahead) in 60 ms LFR frames
ENCODER_CHUNK_LOOK_BACK = 4
DECODER_CHUNK_LOOK_BACK = 1
SAMPLES_PER_LFR_FRAME = 960  # 60 ms at 16 kHz
CHUNK_SAMPLES = CHUNK_SIZE[1] * SAMPLES_PER_LFR_FRAME  # 3840 samples = 240 ms

VQ06_MAX_SAMPLES = 30 * TOKENIZER_RATE  # the S3 tokenizer takes at most 30 s per call
VQ06_MIN_SAMPLES = 480  # shorter pieces are dropped, as upstream does
VQ06_RATE = 25.0
VQ06_RATE_TOLERANCE = 2  # codes; |len - 25 × duration| must stay within this

_FUNASR_FILES = ("config.yaml", "model.pt", "am.mvn")

class AudioTokenizationError(ValueError):
    """The audio cannot be tokenized (no samples, or the vq06 model misbehaves)."""

@dataclass(frozen=True)
class AudioTokens:
    """Raw codes of one clip plus the forms the prompt builder needs."""

    vq02: list[int]  # 0..1023, ~16.67 per second
    vq06: list[int]  # 0..4095, 25 per second
    duration_s: float  # of the audio actually tokenized (16 kHz, peak-normalized, trimmed)

    @property
    def codec_ids(self) -> list[int]:
        """2 vq02 + 3 vq06 per 120 ms group, vq06 shifted to 1024..5119; leftovers dropped."""
        return interleave(self.vq02, self.vq06)

    @property
    def llm_ids(self) -> list[int]:
        return to_llm_ids(self.codec_ids)

    @property
    def token_string(self) -> str:
        """The ``<audio_N>…`` text that goes into the LLM prompt."""
        return to_token_string(self.codec_ids)

@contextlib.contextmanager
def _preserved_rng_state() -> Iterator[None]:
    """FunASR's model builder reseeds every global RNG; keep the caller's streams intact."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

def _check_funasr_dir(funasr_dir: Path) -> None:
    """Fail fast, naming the folder, before FunASR can mistake a path for a hub id."""
    if not funasr_dir.is_dir():
        raise ModelLayoutError(
            f"FunASR model folder {funasr_dir} does not exist; expected the Paraformer "
            "folder of Step-Audio-Tokenizer (config.yaml, model.pt, am.mvn, tokens.json)"
        )
    missing = [name for name in _FUNASR_FILES if not (funasr_dir / name).is_file()]
    if missing:
        raise ModelLayoutError(f"FunASR model folder {funasr_dir} lacks {', '.join(missing)}")

def _load_funasr(funasr_dir: Path, device: torch.device) -> Any:
    """Load the local FunASR folder with upstream ``funasr.AutoModel``, offline.

    ``disable_update`` stops the package-index version check; an existing path
    makes FunASR skip any hub download. The thread count is passed through so
    the loader does not change the process-wide torch setting.
    """
    os.environ.setdefault("MODELSCOPE_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from funasr import AutoModel

    dev = "cpu" if device.type == "cpu" else str(device if device.index is not None else torch.device(device.type, 0))
    with _preserved_rng_state():
        return AutoModel(
            model=str(funasr_dir),
            hub="ms",
            disable_update=True,
            disable_pbar=True,
            device=dev,
            ncpu=torch.get_num_threads(),
            log_level="WARNING",
        )

class AudioTokenizer:
    """vq02 + vq06 tokenizer over the official ``Step-Audio-Tokenizer/`` files.

    Thread-safe: vq02 runs are serialized by a lock (the FunASR model and front
    end are shared; each run has its own streaming caches), vq06 runs by the
    ONNX session's own lock.
    """

    def __init__(self, paths: ModelPaths, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        funasr_dir = Path(paths.funasr_dir)
        _check_funasr_dir(funasr_dir)
        for path in (paths.kmeans, paths.vq06_onnx):
            if not Path(path).is_file():
                raise ModelLayoutError(f"tokenizer file {path} is missing")

        auto = _load_funasr(funasr_dir, self.device)
        self._model = auto.model.eval()
        self._frontend = auto.kwargs["frontend"]
        if self._frontend is None or not hasattr(self._frontend, "dither"):
            raise ModelLayoutError(f"{funasr_dir / 'config.yaml'} does not configure the online fbank front end")
        # Reproducible codes: no random dither in the fbank front end.
        self._frontend.dither = 0.0
        self._cache_conf = {
            "encoder_conf": dict(auto.kwargs["encoder_conf"]),
            "frontend_conf": dict(auto.kwargs["frontend_conf"]),
        }
        width = int(self._cache_conf["encoder_conf"]["output_size"])

        centroids = np.load(paths.kmeans)
        if centroids.ndim != 2 or centroids.shape[1] != width:
            raise ModelLayoutError(
                f"{paths.kmeans} holds centroids of shape {centroids.shape}; expected (K, {width}) "
                "to match the FunASR encoder width"
            )
        self._centroids = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
        self._vq06 = OnnxModel(paths.vq06_onnx, self.device)
        self._vq06_inputs = self._vq06.input_names
        if len(self._vq06_inputs) != 2:
            raise ModelLayoutError(f"{paths.vq06_onnx} has inputs {self._vq06_inputs}; expected feats and feats_length")
        self._vq02_lock = threading.Lock()

    # ------------------------------------------------------------------ public

    @property
    def num_vq02_codes(self) -> int:
        return int(self._centroids.shape[0])

    def tokenize(self, audio: Audio) -> AudioTokens:
        """Tokenize a clip the way the official ``wav2token`` does.

        Expects what the engine holds for a prompt: mono samples that were
        already peak-limited to 0.6 (the official ``preprocess_prompt_wav``
        limits the prompt before taking *any* feature). Here the clip is
        resampled to 16 kHz (up as well as down), peak-normalized to 0.999
        (floor 0.01), trimmed of leading/trailing silence, then encoded.
        """
        wav = self.prepare(audio)
        vq02 = self.vq02_codes(wav)
        vq06 = self.vq06_codes(wav)
        return AudioTokens(vq02=vq02, vq06=vq06, duration_s=wav.numel() / TOKENIZER_RATE)

    @staticmethod
    def prepare(audio: Audio) -> torch.Tensor:
        """16 kHz, peak-normalized, silence-trimmed float32 samples (N,)."""
        samples = to_mono(audio.samples.detach().cpu())
        if samples.numel() == 0:
            raise AudioTokenizationError("the audio holds no samples")
        wav = resample(samples.float(), audio.sample_rate, TOKENIZER_RATE)
        wav = normalize_peak(wav)
        return trim_silence(wav, TOKENIZER_RATE).float()

    def vq02_codes(self, wav16k: torch.Tensor) -> list[int]:
        """Nearest-centroid codes of the streaming encoder's output frames."""
        frames = self.encoder_frames(wav16k)
        if frames.shape[0] == 0:
            return []
        distances = torch.cdist(frames, self._centroids)
        return [int(c) for c in distances.argmin(dim=1)]

    def encoder_frames(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(T, D) float32 CPU encoder output, one row per 60 ms of 16 kHz input."""
        from funasr.utils.load_utils import extract_fbank

        samples = wav16k.detach().float().cpu().reshape(-1)
        # One chunk per 240 ms plus a final call for the remainder (possibly empty).
        n_calls = samples.numel() // CHUNK_SAMPLES + 1
        pieces: list[torch.Tensor] = []
        with self._vq02_lock, torch.inference_mode():
            cache = self._model.init_cache(
                {},
                chunk_size=list(CHUNK_SIZE),
                encoder_chunk_look_back=ENCODER_CHUNK_LOOK_BACK,
                decoder_chunk_look_back=DECODER_CHUNK_LOOK_BACK,
                **self._cache_conf,
            )
            for i in range(n_calls):
                last = i == n_calls - 1
                piece = samples[i * CHUNK_SAMPLES : (i + 1) * CHUNK_SAMPLES]
                if last and not self._final_piece_emits(cache["frontend"], piece.numel()):
                    break
                feats, feat_lens = extract_fbank(
                    [piece], data_type="sound", frontend=self._frontend, cache=cache["frontend"], is_final=last
                )
                if len(feats) == 0 or feats.shape[1] == 0:
                    continue
                feats = feats.to(self.device)
                out, _ = self._model.encode_chunk(feats, feat_lens.to(self.device), cache=cache, is_final=last)
                # The encoder output starts with the cached look-ahead frames of
                # the previous chunk; keep only the frames of this chunk's input.
                keep = int(feat_lens[0])
                start = out.shape[1] - keep if keep > 0 else 0
                pieces.append(out[:, start:].float().cpu())
        if not pieces:
            return torch.zeros(0, self._centroids.shape[1])
        return torch.cat(pieces, dim=1)[0]

    def _final_piece_emits(self, fe_cache: dict[str, Any], n_samples: int) -> bool:
        """Whether the reference front end yields any frame for the last piece.

        StepFun's fork of the online front end emits LFR frames only once the
        new fbank frames plus the held-back splice frames reach ``lfr_m`` (7),
        even on the final call; upstream FunASR now flushes the remainder
        instead. Skipping that remainder keeps the codes equal to the official
        ones (it is at most ~50 ms of audio, already inside the trim margin).
        """
        frontend = self._frontend
        held = fe_cache.get("input_cache")
        pending = n_samples + (0 if held is None else int(held.shape[-1]))
        if pending < frontend.frame_sample_length:
            return False
        new_frames = (pending - frontend.frame_sample_length) // frontend.frame_shift_sample_length + 1
        splice = fe_cache.get("lfr_splice_cache") or []
        held_frames = int(splice[0].shape[0]) if splice else (frontend.lfr_m - 1) // 2
        return new_frames + held_frames >= frontend.lfr_m

    def vq06_codes(self, wav16k: torch.Tensor) -> list[int]:
        """S3 tokenizer codes, 25 per second, for ≤30 s pieces of the clip."""
        samples = wav16k.detach().float().cpu().reshape(-1)
        codes: list[int] = []
        for start in range(0, samples.numel(), VQ06_MAX_SAMPLES):
            piece = samples[start : start + VQ06_MAX_SAMPLES]
            if piece.numel() < VQ06_MIN_SAMPLES:
                continue
            feats = log_mel_spectrogram(piece).unsqueeze(0).numpy()
            length = np.array([feats.shape[2]], dtype=np.int32)
            out = self._vq06.run({self._vq06_inputs[0]: feats, self._vq06_inputs[1]: length})[0]
            piece_codes = [int(c) for c in np.asarray(out).reshape(-1)]
            duration = round(piece.numel() / TOKENIZER_RATE, 2)
            if abs(len(piece_codes) - VQ06_RATE * duration) > VQ06_RATE_TOLERANCE:
                raise AudioTokenizationError(
                    f"vq06 tokenizer returned {len(piece_codes)} codes for {duration:.2f} s of audio; "
                    f"expected {VQ06_RATE * duration:.0f} ± {VQ06_RATE_TOLERANCE} (25 per second). "
                    "Is speech_tokenizer_v1.onnx the CosyVoice v1 S3 tokenizer?"
                )
            codes.extend(piece_codes)
        return codes
