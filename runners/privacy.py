"""What users send (transcripts, texts, edit values) stays out of the logs unless EDITX_LOG_CONTENT=1.

Sizes, durations and timings are always logged; the content itself only when an operator asked for it.
One process-wide switch, set by the service from its configuration when it starts.
"""

from __future__ import annotations

import re

_enabled = False
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def configure(log_content: bool) -> None:
    global _enabled
    _enabled = bool(log_content)


def enabled() -> bool:
    return _enabled


def shown(text: str, limit: int = 80) -> str:
    """The text for a log line: quoted when content may be logged, else only its length."""
    return repr(text[:limit]) if _enabled else f"{len(text)} characters"


def redact(message: str) -> str:
    """A refusal message for the log: the values it quotes back from the request are blanked."""
    return message if _enabled else _QUOTED.sub("'…'", message)
