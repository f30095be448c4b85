"""PromptCache: everything derived from a prompt audio, cached by what determines it.

A prompt's features (vq02/vq06 codec ids, 24 kHz mel, speaker embedding,
transcript) depend only on its decoded samples, its sample rate and the model
settings, so they are keyed by a hash of exactly those. Entries live in a
bounded in-memory LRU and, when a folder is given, on disk so they survive
restarts. Disk writes go to a temporary file that is renamed into place, so a
crash never leaves a half-written entry that reads back as valid; an entry
that fails to load is deleted and recomputed. A folder that cannot be created
or written (read-only mount, permissions) turns the cache memory-only, with
the reason in its statistics and one warning, instead of failing requests.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

log = logging.getLogger("editx.cache")

FORMAT_VERSION = 1


@dataclass(frozen=True)
class PromptFeatures:
    """Cached results for one prompt audio; any field may be missing until computed."""

    codec_ids: list[int] | None = None
    mel: torch.Tensor | None = None  # (1, T, 80) float32
    speaker: torch.Tensor | None = None  # (1, 192) float32
    transcript: str | None = None
    compute_s: float = 0.0  # measured time it took to compute what is cached

    @property
    def has_features(self) -> bool:
        return self.codec_ids is not None and self.mel is not None and self.speaker is not None

    def nbytes(self) -> int:
        size = 8 * len(self.codec_ids or []) + len((self.transcript or "").encode())
        for t in (self.mel, self.speaker):
            size += 0 if t is None else t.numel() * t.element_size()
        return size


class CacheStats(BaseModel):
    enabled: bool
    hits: int
    misses: int
    hit_rate: float
    entries: int
    bytes: int
    disk_entries: int
    disk_bytes: int
    time_saved_s: float
    directory: str | None
    disk_error: str | None = None  # why the folder is not used (the cache is memory-only then)


def audio_key(samples: torch.Tensor, sample_rate: int, settings: str) -> str:
    """Hash of the decoded samples, their rate and the settings that change the features."""
    digest = hashlib.sha256()
    digest.update(settings.encode())
    digest.update(str(int(sample_rate)).encode())
    digest.update(samples.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


class PromptCache:
    """Thread-safe LRU of :class:`PromptFeatures` with an optional persistent folder."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        max_entries: int = 256,
        max_bytes: int = 512 * 1024 * 1024,
        max_disk_bytes: int = 2 * 1024 * 1024 * 1024,
        enabled: bool = True,
    ) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes
        self.enabled = enabled
        self._entries: OrderedDict[str, PromptFeatures] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.time_saved_s = 0.0
        # What is on disk (key → bytes, oldest write first), scanned once here and kept up to date by
        # every write and delete, so statistics and the size cap never list the folder again.
        self._disk: OrderedDict[str, int] = OrderedDict()
        self._disk_bytes = 0
        self.disk_error: str | None = None
        if self.directory:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                probe = tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-")
                probe.close()
                self._scan_disk()
            except OSError as exc:
                self._disk_failed(exc)

    # ----------------------------------------------------------------- lookups
    def get(self, key: str, need_features: bool = True, need_transcript: bool = False) -> PromptFeatures | None:
        """Return the entry when it holds what is needed (counted as a hit), else None (a miss)."""
        if not self.enabled:
            return None
        start = time.perf_counter()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._read_disk(key)
                if entry is not None:
                    self._remember(key, entry)
            else:
                self._entries.move_to_end(key)
            usable = entry is not None and (not need_features or entry.has_features) and (
                not need_transcript or entry.transcript is not None
            )
            if usable:
                self.hits += 1
                self.time_saved_s += max(0.0, entry.compute_s - (time.perf_counter() - start))
                return entry
            self.misses += 1
            return None

    def peek(self, key: str) -> PromptFeatures | None:
        """The entry if present, without counting a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            return entry if entry is not None else self._read_disk(key)

    def put(self, key: str, update: PromptFeatures) -> PromptFeatures:
        """Merge ``update`` into the entry for ``key`` (fields it leaves None are kept)."""
        if not self.enabled:
            return update
        with self._lock:
            old = self._entries.get(key) or self._read_disk(key) or PromptFeatures()
            merged = replace(
                old,
                codec_ids=update.codec_ids if update.codec_ids is not None else old.codec_ids,
                mel=update.mel.detach().cpu().float() if update.mel is not None else old.mel,
                speaker=update.speaker.detach().cpu().float() if update.speaker is not None else old.speaker,
                transcript=update.transcript if update.transcript is not None else old.transcript,
                compute_s=old.compute_s + update.compute_s,
            )
            self._remember(key, merged)
            try:
                self._write_disk(key, merged)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:  # a full disk: this entry is lost, the folder stays in use
                    log.warning("could not write cache entry for %s: disk full", key[:12])
                else:
                    self._disk_failed(exc)
            return merged

    def clear(self) -> int:
        """Forget everything, in memory and on disk; returns how many entries were dropped."""
        with self._lock:
            dropped = len(self._entries)
            self._entries.clear()
            self._bytes = 0
            if self.directory:
                try:
                    files = list(self.directory.glob("*/*.npz"))  # the folder itself: files from before a crash too
                    dropped = max(dropped, len(files))
                    for f in files:
                        f.unlink(missing_ok=True)
                except OSError as exc:
                    self._disk_failed(exc)  # memory is cleared; what is left on disk is no longer read
                self._disk.clear()
                self._disk_bytes = 0
            self.hits = self.misses = 0
            self.time_saved_s = 0.0
            return dropped

    def stats(self) -> CacheStats:
        with self._lock:
            total = self.hits + self.misses
            return CacheStats(
                enabled=self.enabled,
                hits=self.hits,
                misses=self.misses,
                hit_rate=round(self.hits / total, 4) if total else 0.0,
                entries=len(self._entries),
                bytes=self._bytes,
                disk_entries=len(self._disk),
                disk_bytes=self._disk_bytes,
                time_saved_s=round(self.time_saved_s, 4),
                directory=str(self.directory) if self.directory else None,
                disk_error=self.disk_error,
            )

    # -------------------------------------------------------------- internals
    def _disk_failed(self, exc: OSError) -> None:
        """Stop using the folder: memory-only from now on, with the reason kept for /status."""
        if self.directory is None:
            return
        self.disk_error = f"{self.directory}: {exc.strerror or type(exc).__name__} ({type(exc).__name__}); memory only"
        log.warning("prompt cache folder unusable, the cache is memory-only from now on: %s", self.disk_error)
        self.directory = None
        self._disk.clear()
        self._disk_bytes = 0

    def _remember(self, key: str, entry: PromptFeatures) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes()
        self._entries[key] = entry
        self._bytes += entry.nbytes()
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes()

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npz"

    def _write_disk(self, key: str, entry: PromptFeatures) -> None:
        if not self.directory:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"version": FORMAT_VERSION, "key": key, "transcript": entry.transcript, "compute_s": entry.compute_s}
        arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if entry.codec_ids is not None:
            arrays["codec_ids"] = np.asarray(entry.codec_ids, dtype=np.int32)
        if entry.mel is not None:
            arrays["mel"] = entry.mel.numpy()
        if entry.speaker is not None:
            arrays["speaker"] = entry.speaker.numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:  # a full disk: this entry is lost, the folder stays in use
                log.warning("could not write cache entry %s", path, exc_info=True)
                return
            raise
        self._forget_disk(key)
        self._disk[key] = len(data)
        self._disk_bytes += len(data)
        self._trim_disk()

    def _read_disk(self, key: str) -> PromptFeatures | None:
        if not self.directory:
            return None
        path = self._path(key)
        if not path.is_file():
            self._forget_disk(key)  # removed behind our back
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("version") != FORMAT_VERSION or meta.get("key") != key:
                    raise ValueError("entry belongs to another key or format")
                return PromptFeatures(
                    codec_ids=data["codec_ids"].astype(int).tolist() if "codec_ids" in data else None,
                    mel=torch.from_numpy(data["mel"].copy()) if "mel" in data else None,
                    speaker=torch.from_numpy(data["speaker"].copy()) if "speaker" in data else None,
                    transcript=meta.get("transcript"),
                    compute_s=float(meta.get("compute_s", 0.0)),
                )
        except PermissionError as exc:
            self._disk_failed(exc)
            return None
        except Exception:  # any damage: the entry is worthless, recompute it
            log.warning("ignoring corrupt cache entry %s", path)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            self._forget_disk(key)
            return None

    def _scan_disk(self) -> None:
        assert self.directory is not None
        found: list[tuple[int, str, int]] = []
        for f in self.directory.glob("*/*.npz"):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime_ns, f.stem, st.st_size))
        for _, key, size in sorted(found):
            self._disk[key] = size
            self._disk_bytes += size

    def _forget_disk(self, key: str) -> None:
        self._disk_bytes -= self._disk.pop(key, 0)

    def _trim_disk(self) -> None:
        """Drop the oldest written entries until the folder fits ``max_disk_bytes``."""
        while self._disk and self._disk_bytes > self.max_disk_bytes:
            oldest, size = self._disk.popitem(last=False)
            self._disk_bytes -= size
            self._path(oldest).unlink(missing_ok=True)  # an OSError here reaches put(): memory-only
