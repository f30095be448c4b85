"""Rendering a checkpoint's Jinja chat template, offline and without remote code.

From the 2026-01-22 code on, upstream builds its prompts with the tokenizer's
``apply_chat_template(messages, tokenize=True, add_generation_prompt=True)``: the template
in the checkpoint's tokenizer files is rendered to one string, which is then tokenized
with no special tokens added (the template writes its own ``<s>``). This module does the
rendering the way transformers sets up Jinja (sandboxed, ``trim_blocks`` and
``lstrip_blocks``, the loop-controls extension, ``raise_exception`` and ``tojson``), so
the same template gives the same string here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

TEMPLATE_FILE = "chat_template.jinja"


class ChatMessage(BaseModel):
    """One turn: ``system``, ``user`` or ``assistant``, and its text."""

    role: str
    content: str


class ChatTemplateError(ValueError):
    """The checkpoint's template failed to render (a broken file, not a user error)."""


def _raise(message: str) -> NoReturn:
    raise ChatTemplateError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render_chat(template: str, messages: Sequence[ChatMessage], special_tokens: Mapping[str, str],
                add_generation_prompt: bool = True) -> str:
    """The prompt text the template makes of ``messages`` (``special_tokens``: bos_token, eos_token, …)."""
    try:
        return _compile(template).render(
            messages=[m.model_dump() for m in messages],
            add_generation_prompt=add_generation_prompt,
            **special_tokens,
        )
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the checkpoint's chat template does not render: {e}") from e


def find_chat_template(llm_dir: Path, tokenizer_config: Mapping[str, Any]) -> str | None:
    """The template a transformers tokenizer loaded from ``llm_dir`` would use, or None.

    ``tokenizer_config.json`` holds it as a string or as a list of named templates (the one named
    ``default`` is used); newer saves put it in ``chat_template.jinja`` beside it instead.
    """
    found = tokenizer_config.get("chat_template")
    if isinstance(found, list):
        named = {entry.get("name"): entry.get("template") for entry in found if isinstance(entry, dict)}
        found = named.get("default")
    if isinstance(found, str) and found.strip():
        return found
    beside = Path(llm_dir) / TEMPLATE_FILE
    if beside.is_file():
        text = beside.read_text(encoding="utf-8")
        return text if text.strip() else None
    return None
