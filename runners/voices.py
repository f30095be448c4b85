"""Voice registry: named prompt voices kept as files, so cloning with a voice costs no preparation.

A voice is one folder ``<EDITX_VOICES_DIR>/<id>/`` holding

* ``audio.wav``: the prompt audio exactly as decoded (float32, its own sample rate), so the
  samples, and with them the prompt-cache key, are bit-identical when read back;
* ``features.npz``: its prompt features (codec ids, 24 kHz mel, speaker embedding);
* ``voice.json``: name, transcript, duration, creation time and the model settings the
  features were computed with (features of another model are not reused).

The folder is built under a temporary name and renamed into place in one step, so a voice
appears whole or not at all, even if the process dies half-way, and two replicas creating
the same name at once cannot both win (the second rename fails: a conflict). Nothing is
held only in memory: every lookup reads the folder, so replicas that share it see each
other's voices at once; the features are memoised per voice id and creation time.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch
from pydantic import BaseModel, Field

from runners.audio import Audio
from runners.errors import ConflictError, InvalidInputError, NotFoundError, StorageUnavailableError
from runners.prompt_cache import PromptFeatures

log = logging.getLogger("editx.voices")

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
FORMAT_VERSION = 1
_META, _AUDIO, _FEATURES = "voice.json", "audio.wav", "features.npz"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0  # a temporary folder this old belongs to a writer that died


class Voice(BaseModel):
    """A registered voice as the API shows it."""

    id: str = Field(description="what `voice` takes in /v1/audio/speech and /clone; equal to the name")
    object: Literal["voice"] = "voice"
    name: str
    text: str = Field(description="transcript of the voice's audio (given, or heard by Whisper)")
    duration_s: float
    created_at: int = Field(description="Unix time of creation")


@dataclass(frozen=True)
class StoredVoice:
    """A voice with what cloning needs: its audio, transcript and precomputed prompt features."""

    voice: Voice
    audio: Audio
    features: PromptFeatures | None  # None when computed for other model settings
    settings: str


def check_name(name: str) -> str:
    """The name, or an InvalidInputError saying what a name may be."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"voice name {name!r} is not allowed: use 1–64 characters of A–Z, a–z, 0–9, '_' and '-'", field="name"
        )
    return name


class VoiceRegistry:
    """Voices as folders under ``directory``; safe for several threads and several processes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[int, StoredVoice]] = {}

    # ----------------------------------------------------------------- queries
    def all(self) -> list[Voice]:
        """Every voice in the folder, oldest first (voices of other replicas included)."""
        if not self.directory.is_dir():
            return []
        out: list[Voice] = []
        for entry in self.directory.iterdir():
            if entry.name.startswith(".") or not NAME_PATTERN.fullmatch(entry.name):
                continue
            meta = self._read_meta(entry.name)
            if meta is not None:
                out.append(meta)
        return sorted(out, key=lambda v: (v.created_at, v.id))

    def get(self, voice_id: str, field: str = "voice") -> Voice:
        """The voice's description; NotFoundError when no such voice exists."""
        meta = self._read_meta(voice_id) if NAME_PATTERN.fullmatch(voice_id or "") else None
        if meta is None:
            raise NotFoundError(self._unknown(voice_id), field=field)
        return meta

    def load(self, voice_id: str, field: str = "voice") -> StoredVoice:
        """Audio, transcript and features of a voice (read from the folder, memoised)."""
        meta = self.get(voice_id, field)
        with self._lock:
            memo = self._memo.get(voice_id)
            if memo is not None and memo[0] == meta.created_at:
                return memo[1]
        folder = self.directory / voice_id
        try:
            data, rate = sf.read(folder / _AUDIO, dtype="float32", always_2d=False)
            raw = json.loads((folder / _META).read_text())
            features = _read_features(folder / _FEATURES)
        except FileNotFoundError as exc:  # deleted by another replica between get() and here
            raise NotFoundError(self._unknown(voice_id), field=field) from exc
        except (OSError, ValueError, sf.LibsndfileError) as exc:
            raise StorageUnavailableError(f"voice {voice_id!r} in {folder} cannot be read: {exc}") from exc
        stored = StoredVoice(meta, Audio(torch.from_numpy(np.ascontiguousarray(data)), int(rate)), features,
                             str(raw.get("settings", "")))
        with self._lock:
            self._memo[voice_id] = (meta.created_at, stored)
        return stored

    # ---------------------------------------------------------------- changes
    def check_new(self, name: str) -> str:
        """The name, if it is allowed and free (InvalidInputError / ConflictError otherwise)."""
        check_name(name)
        if self._exists(name):
            raise ConflictError(self._taken(name), field="name")
        return name

    def create(self, name: str, audio: Audio, transcript: str, codec_ids: list[int], mel: torch.Tensor,
               speaker: torch.Tensor, settings: str) -> Voice:
        """Store ``audio`` under ``name`` with its transcript and prompt features (computed by the engine).

        Raises InvalidInputError (bad name), ConflictError (name taken) or StorageUnavailableError
        (the folder cannot be written).
        """
        self.check_new(name)
        voice = Voice(id=name, name=name, text=transcript, duration_s=round(audio.duration_s, 3),
                      created_at=int(time.time()))
        self._write(voice, audio, codec_ids, mel, speaker, settings)
        log.info("voice %r registered (%.2f s of audio, %d chars of text)", name, audio.duration_s, len(transcript))
        return voice

    def delete(self, voice_id: str) -> Voice:
        """Remove a voice (atomically: it is renamed away, then its files go); NotFoundError when unknown."""
        voice = self.get(voice_id, field="voice_id")
        trash = self.directory / f"{_TMP_PREFIX}deleted-{uuid.uuid4().hex}"
        try:
            os.rename(self.directory / voice_id, trash)
        except FileNotFoundError as exc:  # another replica deleted it first
            raise NotFoundError(self._unknown(voice_id), field="voice_id") from exc
        except OSError as exc:
            raise StorageUnavailableError(
                f"voice {voice_id!r} cannot be deleted: the voices folder {self.directory} is not writable ({exc})"
            ) from exc
        shutil.rmtree(trash, ignore_errors=True)
        with self._lock:
            self._memo.pop(voice_id, None)
        log.info("voice %r deleted", voice_id)
        return voice

    # -------------------------------------------------------------- internals
    def _exists(self, name: str) -> bool:
        return (self.directory / name).exists()

    def _unknown(self, voice_id: str) -> str:
        known = [v.id for v in self.all()]
        shown = ", ".join(known[:20]) + (", …" if len(known) > 20 else "") if known else "none yet"
        return f"voice {voice_id!r} does not exist (registered: {shown}); create it with POST /v1/audio/voices"

    @staticmethod
    def _taken(name: str) -> str:
        return f"a voice named {name!r} already exists; choose another name or DELETE /v1/audio/voices/{name} first"

    def _read_meta(self, voice_id: str) -> Voice | None:
        path = self.directory / voice_id / _META
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") != FORMAT_VERSION:
                return None
            return Voice.model_validate(raw["voice"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable voice folder %s", path.parent)
            return None

    def _write(self, voice: Voice, audio: Audio, codec_ids: list[int], mel: torch.Tensor, speaker: torch.Tensor,
               settings: str) -> None:
        unwritable = (f"the voices folder {self.directory} cannot be written; set EDITX_VOICES_DIR to a "
                      "writable folder")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._sweep_stale()
            tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=_TMP_PREFIX))
        except OSError as exc:
            raise StorageUnavailableError(f"{unwritable} ({exc.strerror or exc})") from exc
        try:
            sf.write(tmp / _AUDIO, audio.samples.detach().cpu().numpy().astype(np.float32), audio.sample_rate,
                     format="WAV", subtype="FLOAT")
            np.savez(tmp / _FEATURES, codec_ids=np.asarray(codec_ids, dtype=np.int32),
                     mel=mel.detach().cpu().float().numpy(), speaker=speaker.detach().cpu().float().numpy())
            meta = {"version": FORMAT_VERSION, "voice": voice.model_dump(), "settings": settings,
                    "sample_rate": audio.sample_rate}
            (tmp / _META).write_text(json.dumps(meta, ensure_ascii=False, indent=1))
            for f in tmp.iterdir():
                _fsync(f)
            os.chmod(tmp, 0o755)
            os.rename(tmp, self.directory / voice.id)  # atomic; fails when the name exists (not empty)
            _fsync(self.directory)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or self._exists(voice.id):
                raise ConflictError(self._taken(voice.id), field="name") from exc
            raise StorageUnavailableError(f"{unwritable} ({exc.strerror or exc})") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _sweep_stale(self) -> None:
        """Remove temporary folders left by writers that died (old enough to be nobody's)."""
        now = time.time()
        for entry in self.directory.glob(f"{_TMP_PREFIX}*"):
            try:
                if now - entry.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                continue


def _read_features(path: Path) -> PromptFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return PromptFeatures(
                codec_ids=data["codec_ids"].astype(int).tolist(),
                mel=torch.from_numpy(data["mel"].copy()),
                speaker=torch.from_numpy(data["speaker"].copy()),
            )
    except FileNotFoundError:
        raise
    except Exception:  # damaged features: preparation recomputes them from the audio
        log.warning("ignoring unreadable voice features %s", path)
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
