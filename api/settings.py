"""HTTP settings (authentication, metrics, upload deadlines, admission), read from EDITX_* once at start."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field, PrivateAttr

log = logging.getLogger("editx.auth")

# Never behind authentication or admission: the orchestrator must always reach them.
PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz"})


class HttpSettings(BaseModel):
    """What the HTTP layer needs to know; the engine's own settings are ``runners.config.EngineConfig``."""

    api_keys: str = Field("", description="comma-separated API keys; set = every route but the probes needs one")
    api_keys_file: str = Field("", description="file with one API key per line (# comments); adds to api_keys")
    metrics_public: bool = Field(False, description="serve /metrics without a key even when keys are set")
    upload_timeout_s: float = Field(120.0, gt=0, description="a request body must arrive within this (else 408)")
    upload_idle_s: float = Field(15.0, gt=0, description="a request body that sends nothing for this long is "
                                                         "answered 408 and frees its upload slot at once")
    max_uploads: int = Field(32, gt=0, description="request bodies received at once; more answer 429 at once")
    max_requests: int = Field(64, gt=0, description="work requests (APIs, UI actions) in flight; more answer 429")
    task_ttl_s: float = Field(3600.0, gt=0, description="a finished task (its result, status or error) is kept "
                                                        "this many seconds, then its id is unknown (404)")
    task_max_mb: float = Field(512.0, gt=0, description="finished tasks' results kept in memory together, MiB; "
                                                        "over it the oldest finished go first")
    _keys: tuple[str, ...] | None = PrivateAttr(None)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "HttpSettings":
        env = dict(os.environ if env is None else env)
        return cls(**{name: env[f"EDITX_{name.upper()}"] for name in cls.model_fields
                      if f"EDITX_{name.upper()}" in env})

    def keys(self) -> tuple[str, ...]:
        """Every configured key, read once (a changed key file needs a restart).

        A key file that cannot be read fails closed: every protected route answers 401, with an error
        in the log, rather than serving without authentication.
        """
        if self._keys is None:
            keys = [k.strip() for k in self.api_keys.split(",")]
            if self.api_keys_file:
                try:
                    text = Path(self.api_keys_file).expanduser().read_text()
                    keys += [line.split("#", 1)[0].strip() for line in text.splitlines()]
                except OSError as exc:
                    log.error("EDITX_API_KEYS_FILE cannot be read (%s): every protected route answers 401", exc)
                    keys.append(secrets.token_hex(32))  # a key nobody has
            self._keys = tuple(dict.fromkeys(k for k in keys if k))
        return self._keys
