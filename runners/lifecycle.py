"""The engine's lifecycle: load, unload, offload, bring back, and the idle monitor.

States: ``unloaded`` → ``loading`` → ``loaded`` ⇄ ``offloaded``, and ``failed`` when a load
raised. Work runs in "units" (:meth:`EngineLifecycle._busy`): many at once, each making sure
the model is loaded (or brought back) first. Load, unload and offload take an exclusive
lock and wait for the units in flight, so nothing is cut off; a unit that arrives while
one of them runs waits for it and then proceeds (loading again if it must).

What a load builds and what serving needs started or stopped around it is the
subclass's business (:meth:`_load_parts`, :meth:`_start_serving`, :meth:`_stop_serving`).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch

from runners.config import EngineConfig
from runners.errors import EngineUnavailableError

log = logging.getLogger("editx.engine")

EngineState = Literal["unloaded", "loading", "loaded", "offloaded", "failed"]


class EngineLifecycle:
    """State, locking and memory of an engine whose parts are torch modules (or hold some)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = config.torch_device()
        self.state: EngineState = "unloaded"
        self.error: str | None = None
        self.load_count = 0
        self.load_seconds: float | None = None
        self.last_used = time.monotonic()
        self.last_unload: dict[str, object] | None = None
        self._parts: Any = None  # the subclass's loaded parts (a dataclass of them); None when unloaded
        self._lock = threading.RLock()  # held by load / unload / offload / bring-back (exclusive)
        self._drained = threading.Condition(self._lock)
        self._inflight = 0  # units of work running now (shared: many at once)
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        if config.idle_unload_s > 0:
            self._monitor = threading.Thread(target=self._watch_idle, name="editx-idle", daemon=True)
            self._monitor.start()

    # ------------------------------------------------------------ subclass hooks
    def _load_parts(self) -> None:
        """Build ``self._parts``, an object whose attributes are the parts (raises on failure)."""
        raise NotImplementedError

    def _start_serving(self) -> None:
        """Called with the parts loaded (or moved back), before work is let in."""

    def _stop_serving(self) -> None:
        """Called after the work in flight drained, before the parts are dropped or moved."""

    def _release_parts(self) -> None:
        """Called on unload after the parts are dropped (e.g. to unload a lazily loaded helper)."""

    def _offload_refusal(self) -> str | None:
        """Why the parts cannot be offloaded (then they are unloaded instead), or None."""
        return None

    # ----------------------------------------------------------------- states
    @property
    def is_loaded(self) -> bool:
        return self.state == "loaded"

    @property
    def ready(self) -> bool:
        """Can a request be served now or after a load it will trigger? (for /readyz)

        A failed load is not ready; neither is the very first load at start. A
        lazily unloaded or offloaded engine is ready: the next request loads it.
        """
        if self.state in ("loaded", "offloaded"):
            return True
        if self.state == "unloaded":
            return self.config.lazy_load or self.load_count > 0
        return self.state == "loading" and self.load_count > 0

    def load(self) -> "EngineLifecycle":
        """Load every part (idempotent). Raises EngineUnavailableError on failure."""
        with self._lock:
            if self.state == "loaded":
                return self
            self.state, self.error = "loading", None
            start = time.perf_counter()
            try:
                self._load_parts()
                self._start_serving()
            except Exception as exc:
                self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
                log.exception("model load failed")
                raise EngineUnavailableError(f"model load failed: {self.error}") from exc
            self.load_seconds = time.perf_counter() - start
            self.load_count += 1
            self.state = "loaded"
            log.info("engine loaded in %.1f s on %s", self.load_seconds, self.device)
            return self

    def unload(self, reason: str = "requested") -> None:
        """Drop every part and return the memory (GPU caches included). Waits for work in flight."""
        with self._lock:
            self._drained.wait_for(lambda: self._inflight == 0)
            if self.state not in ("loaded", "offloaded"):
                return
            before = self.memory()
            self._stop_serving()
            self._parts = None
            self._release_parts()
            release_memory()
            self.last_unload = {"action": "unload", "reason": reason, "before": before, "after": self.memory()}
            self.state = "unloaded"
            log.info("engine unloaded (%s)", reason)

    def offload(self, reason: str = "requested") -> None:
        """Move the torch weights to CPU memory; the next request moves them back."""
        with self._lock:
            self._drained.wait_for(lambda: self._inflight == 0)
            if self.state != "loaded":
                return
            refusal = self._offload_refusal()
            if refusal is not None:
                log.info("%s", refusal)
                self.unload(f"{reason}; {refusal}")
                return
            before = self.memory()
            self._stop_serving()
            for part in self._held_parts():
                move_modules(part, torch.device("cpu"))
            release_memory()
            self.last_unload = {"action": "offload", "reason": reason, "before": before, "after": self.memory()}
            self.state = "offloaded"
            log.info("engine offloaded to CPU memory (%s)", reason)

    def close(self) -> None:
        """Stop the idle monitor and serving (the service calls this at shutdown)."""
        self._stop.set()
        with self._lock:
            self._stop_serving()

    # ------------------------------------------------------------------ work
    @contextmanager
    def _busy(self) -> Iterator[None]:
        """One unit of work: the model is loaded (or brought back) first, and no unload starts until it ends.

        Many units run at once; load, unload and offload take ``_lock`` and wait for them.
        Idle time counts from the end of the last one.
        """
        with self._lock:
            self._ensure_loaded()
            self._inflight += 1
            self.last_used = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                self.last_used = time.monotonic()
                self._drained.notify_all()

    def _ensure_loaded(self) -> None:
        """Under ``_lock``: load, or move offloaded weights back, before work starts."""
        if self.state == "offloaded":
            for part in self._held_parts():
                move_modules(part, self.device)
            self._start_serving()
            self.state = "loaded"
            log.info("engine moved back to %s", self.device)
        if self.state != "loaded":
            self.load()

    def _loaded_parts(self) -> Any:
        """The parts, loading (or bringing them back) first when needed."""
        if self.state != "loaded":
            with self._lock:
                self._ensure_loaded()
        return self._parts

    def _held_parts(self) -> list[object]:
        """Every part held now (none when unloaded)."""
        return [] if self._parts is None else list(vars(self._parts).values())

    # ------------------------------------------------------------------ idle
    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_used

    def _time_until_unload(self) -> float | None:
        if self.config.idle_unload_s <= 0 or self.state != "loaded":
            return None
        return round(max(0.0, self.config.idle_unload_s - self.idle_seconds()), 1)

    def _watch_idle(self) -> None:
        limit = self.config.idle_unload_s
        while not self._stop.wait(min(1.0, limit / 4)):
            if self.state != "loaded" or self._inflight or self.idle_seconds() < limit:
                continue
            # Never wait here: a load or unload holding the lock is work, so we are not idle.
            if not self._lock.acquire(blocking=False):
                continue
            try:
                if self.state == "loaded" and not self._inflight and self.idle_seconds() >= limit:
                    reason = f"idle for {self.idle_seconds():.0f} s"
                    self.offload(reason) if self.config.idle_action == "offload" else self.unload(reason)
            finally:
                self._lock.release()

    # ---------------------------------------------------------------- memory
    def memory(self) -> dict[str, float]:
        """Process/GPU memory plus the weights this engine holds, split by where they live (MiB)."""
        out = memory_in_use()
        held: dict[str, float] = {}
        for part in self._held_parts():
            for module in modules_of(part):
                for t in [*module.parameters(), *module.buffers()]:
                    key = f"weights_{t.device.type}_mb"
                    held[key] = held.get(key, 0.0) + t.numel() * t.element_size() / 2**20
        out["weights_cpu_mb"] = 0.0
        if self.device.type == "cuda":
            out["weights_cuda_mb"] = 0.0
        out.update({k: round(v, 1) for k, v in held.items()})
        return out


def memory_in_use() -> dict[str, float]:
    """Process RSS, and CUDA allocated/reserved when a GPU is present (MiB)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/statm") as f:
            out["rss_mb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except OSError:
        pass
    if torch.cuda.is_available():
        out["gpu_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        out["gpu_reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
    return out


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def modules_of(part: object) -> list[torch.nn.Module]:
    """The torch modules a part holds: itself, or its direct attributes."""
    if isinstance(part, torch.nn.Module):
        return [part]
    return [v for v in getattr(part, "__dict__", {}).values() if isinstance(v, torch.nn.Module)]


def move_modules(part: object, device: torch.device) -> None:
    """Move every torch module a part holds to ``device``."""
    for module in modules_of(part):
        module.to(device)
