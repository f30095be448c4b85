"""Every named UI endpoint works from ``gradio_client`` against a served instance, the voice and dialogue ones included.

The voice dropdown's choices are refreshed for browser sessions only; an API client names a voice the
registry knows, and the handler checks it there (an unknown one is a clear error, not a 500).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import soundfile as sf
from gradio_client import Client, handle_file

from tests.service_helpers import served_instance, service_env, tone, wav_bytes


def test_clone_edit_and_clone_voice_from_gradio_client(tiny_root: Path, tmp_path: Path) -> None:
    env = {**service_env(tiny_root), "EDITX_VOICES_DIR": str(tmp_path / "voices")}
    upload = tmp_path / "voice.wav"
    upload.write_bytes(wav_bytes(tone(2.0)))
    with served_instance(env) as url:
        created = httpx.post(f"{url}/v1/audio/voices", data={"name": "stella", "text": "a test prompt"},
                             files={"audio": ("v.wav", upload.read_bytes(), "audio/wav")}, timeout=300)
        assert created.status_code == 201, created.text
        # No analytics (nothing leaves this machine); closed before the server stops (its heartbeat stream
        # would hold the server's graceful shutdown open).
        client = Client(f"{url}/ui/", verbose=False, analytics_enabled=False, download_files=str(tmp_path / "dl"))
        try:
            named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
            assert {"/clone", "/edit", "/clone_voice", "/dialogue"} <= named

            def audio(result: tuple) -> float:
                info = sf.info(result[0])
                assert info.samplerate == 24000 and info.frames > 0
                return info.frames / info.samplerate

            assert audio(client.predict(handle_file(str(upload)), "a test prompt", "Hello from a client.", 0, "",
                                        api_name="/clone")) > 0.5
            assert audio(client.predict(handle_file(str(upload)), "a test prompt", "emotion", "happy", "", 1, 0,
                                        api_name="/edit")) > 0.5
            assert audio(client.predict("stella", "Hello in a saved voice.", 0, "", api_name="/clone_voice")) > 0.5
            with pytest.raises(Exception, match="voice 'nobody' does not exist"):
                client.predict("nobody", "Hello.", 0, "", api_name="/clone_voice")

            # A dialogue script: the audio, its SRT (one cue per line, voice named), the caption files.
            path, srt, files, _ = client.predict("[stella] Hello there.\n[stella] (happy) See you soon.", 0,
                                                 api_name="/dialogue")
            assert audio((path,)) > 0.5
            assert [cue.split("\n")[2] for cue in srt.strip().split("\n\n")] == [
                "stella: Hello there.", "stella: See you soon."]
            assert sorted(Path(f).suffix for f in files) == [".srt", ".vtt"]
            with pytest.raises(Exception, match="line 2: "):
                client.predict("[stella] Hello.\nno voice here", 0, api_name="/dialogue")
        finally:
            client.close()
