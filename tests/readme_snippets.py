"""The README's code blocks, so tests can run them exactly as a user pastes them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_URL = "http://localhost:3000"


def code_block(language: str, containing: str) -> str:
    """The one fenced ``language`` block of the README that contains ``containing``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"expected one ```{language} block with {containing!r} in README.md, found {len(found)}"
    return found[0]
