"""A real server (``bentoml.serve``) called exactly the way the README shows: SyncHTTPClient + local files.

Also checks what only a real server can: /metrics (it hangs under TestClient)
and that the Gradio UI answers on the same port.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest

from tests.service_helpers import decode, free_port, service_env, tone, wait_ready, wav_bytes

PROMPT_TEXT = "Please call Stella and ask her to bring these things."


@pytest.fixture(scope="module")
def server_url(tiny_root: Path) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in service_env(tiny_root).items():
            mp.setenv(key, value)  # the server's worker process inherits these
        from service import EditXService

        port = free_port()
        with bentoml.serve(EditXService, port=port, host="127.0.0.1") as server:
            wait_ready(server.url, timeout=300)
            yield server.url


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("voice") / "voice.wav"
    path.write_bytes(wav_bytes(tone(2.5)))
    return path


def test_clone_then_edit_with_the_python_client(server_url: str, voice: Path, tmp_path: Path) -> None:
    # The README snippet, verbatim apart from the URL.
    with bentoml.SyncHTTPClient(server_url, timeout=600) as client:
        cloned = client.clone(
            prompt_audio=voice,
            prompt_text=PROMPT_TEXT,
            target_text="Good morning, how are you today?",
            response_format="flac",
        )
        samples, rate = decode(Path(cloned).read_bytes())
        assert rate == 24000 and samples.size > 0

        edited = client.edit(
            audio=Path(cloned),
            edit_type="speed",
            edit_info="faster",
            audio_text="Good morning, how are you today?",
            n_edit_iter=2,
        )
        samples, rate = decode(Path(edited).read_bytes())
        assert rate == 24000 and samples.size > 0


def test_readme_client_snippet_runs_as_pasted(server_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from tests.readme_snippets import DEFAULT_URL, code_block
    from tests.speech import SENTENCE, speak

    snippet = code_block("python", "bentoml.SyncHTTPClient")
    speak(SENTENCE, tmp_path / "voice.wav")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.replace(DEFAULT_URL, server_url), "README.md", "exec"), {})  # noqa: S102
    printed = capsys.readouterr().out
    cloned, edited = re.fullmatch(r"clone: (\S+) edit: (\S+)\n", printed).groups()
    for path in (cloned, edited):
        samples, rate = decode(Path(path).read_bytes())
        assert rate == 24000 and samples.size > 0


def test_readme_curl_commands_run_as_pasted(server_url: str, tmp_path: Path) -> None:
    from tests.readme_snippets import DEFAULT_URL, code_block
    from tests.speech import require_espeak

    require_espeak()
    script = "set -euo pipefail\n" + code_block("bash", "curl -s -F prompt_audio").replace(DEFAULT_URL, server_url)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for name in ("cloned.wav", "happier.wav"):
        samples, rate = decode((tmp_path / name).read_bytes())
        assert rate == 24000 and samples.size > 0
    assert "stella" in done.stdout.lower()  # /transcribe heard the espeak voice
    assert '"edit_types"' in done.stdout and '"state":"loaded"' in done.stdout.replace(" ", "")


def test_readme_streaming_curl_runs_as_pasted(server_url: str, voice: Path, tmp_path: Path) -> None:
    from tests.readme_snippets import DEFAULT_URL, code_block

    (tmp_path / "voice.wav").write_bytes(voice.read_bytes())
    script = "set -euo pipefail\n" + code_block("bash", "curl -sN -F prompt_audio").replace(DEFAULT_URL, server_url)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    samples, rate = decode((tmp_path / "streamed.wav").read_bytes())  # the open-ended header reads whole
    assert rate == 24000 and samples.size > 0


def test_readme_task_curl_runs_as_pasted(server_url: str, voice: Path, tmp_path: Path) -> None:
    from tests.readme_snippets import DEFAULT_URL, code_block

    (tmp_path / "voice.wav").write_bytes(voice.read_bytes())
    script = "set -euo pipefail\n" + code_block("bash", "/tasks/edit/submit").replace(DEFAULT_URL, server_url)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    samples, rate = decode((tmp_path / "long-edit.wav").read_bytes())
    assert rate == 24000 and samples.size > 0
    assert '"captions":' in done.stdout and '"progress":' in done.stdout
    assert done.stdout.rstrip().endswith("}")  # the cancel's answer: the task's status, or why not (finished)


def test_plain_http_upload_and_headers(server_url: str, voice: Path) -> None:
    # What curl -F sends: application/octet-stream.
    r = httpx.post(
        f"{server_url}/edit",
        files={"audio": ("voice.wav", voice.read_bytes(), "application/octet-stream")},
        data={"edit_type": "vad"},
        timeout=600,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert float(r.headers["x-editx-duration-s"]) > 0 and int(r.headers["x-editx-tokens"]) > 0


def test_bad_input_over_the_wire(server_url: str) -> None:
    r = httpx.post(f"{server_url}/clone", files={"prompt_audio": ("x.wav", b"not audio")},
                   data={"prompt_text": "x", "target_text": "y"}, timeout=60)
    assert r.status_code == 400 and r.json()["field"] == "prompt_audio"
    big = b"\0" * (int(os.environ.get("EDITX_MAX_UPLOAD_BYTES", 2 * 1024 * 1024)) + 2 * 1024 * 1024)
    r = httpx.post(f"{server_url}/clone", content=big, headers={"content-type": "multipart/form-data; boundary=b"},
                   timeout=60)
    assert r.status_code == 413
    assert httpx.get(f"{server_url}/readyz", timeout=10).status_code == 200


def test_metrics_health_docs_and_ui_on_one_port(server_url: str) -> None:
    metrics = httpx.get(f"{server_url}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "bentoml_service_request" in metrics.text  # the calls above were counted
    for path in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(f"{server_url}{path}", timeout=10).status_code == 200
    assert "/clone" in httpx.get(f"{server_url}/docs.json", timeout=10).json()["paths"]
    status = httpx.get(f"{server_url}/status", timeout=10).json()
    assert status["state"] == "loaded" and status["load_count"] == 1
    ui = httpx.get(f"{server_url}/ui/", timeout=30, follow_redirects=True)
    assert ui.status_code == 200 and "gradio" in ui.text.lower()


CLIENT_WITHOUT_PILLOW = """
import gc, os, sys
sys.modules["PIL"] = None  # a client machine without Pillow: `import PIL` fails there
from pathlib import Path
import bentoml
url, voice = sys.argv[1], Path(sys.argv[2])
client = bentoml.SyncHTTPClient(url, timeout=600)
try:
    client.clone(prompt_audio=voice, prompt_text="a test prompt", target_text="Hi.")
except ImportError as exc:
    print("IMPORT-ERROR", exc.name)
sys.modules.pop("PIL")
import PIL  # now available again, as with `pip install bentoml pillow`
with client:
    cloned = Path(client.clone(prompt_audio=voice, prompt_text="a test prompt", target_text="Hi."))
print("FOLDER", cloned.parent.name.startswith("bentoml-client-"), cloned.exists())
del client
gc.collect()
print("AFTER-CLIENT", cloned.exists())
"""


def test_client_needs_pillow_and_its_files_go_with_it(server_url: str, voice: Path) -> None:
    """What the README says about the client: audio answers need Pillow, and live in the client's temp folder."""
    out = subprocess.run(["python", "-c", CLIENT_WITHOUT_PILLOW, server_url, str(voice)], capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PATH": os.path.dirname(os.sys.executable)
                                                      + os.pathsep + os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "IMPORT-ERROR PIL" in out.stdout  # bentoml's file answers import PIL even for audio
    assert "FOLDER True True" in out.stdout  # still there after the `with` block closes the connection
    assert "AFTER-CLIENT False" in out.stdout  # removed with the client object
