"""POST /v1/audio/translations through the real ``openai`` client, served with a multilingual Whisper.

The Whisper here is a tiny random multilingual one (``runners.tiny.whisper``): its words are noise,
so the tests check what a client relies on — status, shapes, formats — not the English it writes.
The English-only refusal is checked against the default server in ``test_openai_api.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.service_helpers import tone, wav_bytes
from tests.test_openai_api import served


@pytest.fixture(scope="module")
def client(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    from runners.tiny.whisper import write_multilingual_whisper

    whisper = write_multilingual_whisper(tmp_path_factory.mktemp("whisper") / "tiny-multilingual")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITX_ASR_MODEL", str(whisper))
        mp.setenv("EDITX_ASR_BEAM_SIZE", "1")
        with served(tiny_root, tmp_path_factory.mktemp("voices")) as url:
            yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "speech.wav"
    path.write_bytes(wav_bytes(tone(2.0)))
    return path


def test_translation_in_every_format(client: openai.OpenAI, clip: Path) -> None:
    with clip.open("rb") as f:
        plain = client.audio.translations.create(model="whisper-1", file=f, temperature=0.0)
    assert isinstance(plain.text, str)
    with clip.open("rb") as f:
        text = client.audio.translations.create(model="whisper-1", file=f, response_format="text", temperature=0.0)
    assert isinstance(text, str) and text.endswith("\n")
    with clip.open("rb") as f:
        verbose = client.audio.translations.create(model="whisper-1", file=f, response_format="verbose_json",
                                                   temperature=0.0, prompt="Earlier words.")
    assert verbose.language == "english" and verbose.duration == pytest.approx(2.0, abs=0.05)
    assert verbose.segments and all(s.end >= s.start for s in verbose.segments)
    with clip.open("rb") as f:
        srt = client.audio.translations.create(model="whisper-1", file=f, response_format="srt", temperature=0.0)
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", srt)
    with clip.open("rb") as f:
        vtt = client.audio.translations.create(model="whisper-1", file=f, response_format="vtt", temperature=0.0)
    assert vtt.startswith("WEBVTT\n\n")


def test_translation_refusals(client: openai.OpenAI, clip: Path) -> None:
    with clip.open("rb") as f, pytest.raises(openai.BadRequestError) as err:
        client.audio.translations.create(model="dall-e-3", file=f)
    assert err.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.translations.create(model="whisper-1", file=("notes.txt", b"not audio at all", "text/plain"))
    assert err.value.body["param"] == "file"  # type: ignore[index]
