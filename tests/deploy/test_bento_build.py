"""`bentoml build` packs a Bento whose Dockerfile installs everything the service imports.

Runs offline once uv is in the venv (the very first build fetches uv from the
index). Skipped only when EDITX_SKIP_BENTO_BUILD=1 is set explicitly. The image
itself is built, started and checked by ``./dev container`` (deploy/container-check.sh).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What service.py imports, directly or through runners/ and ui/.
NEEDED = ("torch", "torchaudio", "transformers", "funasr", "gradio", "onnxruntime", "soundfile", "bentoml",
          "fastapi", "sentencepiece", "safetensors", "numpy", "pydantic")


@pytest.fixture(scope="module")
def bento_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("EDITX_SKIP_BENTO_BUILD") == "1":
        pytest.skip("EDITX_SKIP_BENTO_BUILD=1")
    home = tmp_path_factory.mktemp("bentoml-home")
    bentoml = Path(sys.executable).with_name("bentoml")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run([str(bentoml), "build", ".", "--output", "tag"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"bentoml build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    match = re.search(r"__tag__:(\S+):(\S+)", done.stdout)
    assert match, done.stdout[-2000:]
    name, version = match.groups()
    path = home / "bentos" / name / version
    assert path.is_dir()
    return path


def test_dockerfile_installs_what_the_service_imports(bento_dir: Path) -> None:
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    # A slim base: the torch +cu130 wheels bring the CUDA libraries, the host brings the driver.
    assert "FROM debian:bookworm-slim" in dockerfile and "nvidia/cuda" not in dockerfile
    assert "libsndfile1" in dockerfile and "build-essential" not in dockerfile
    assert "USER bentoml" in dockerfile  # non-root
    assert "ENV EDITX_CACHE_DIR=$EDITX_CACHE_DIR" in dockerfile and "ARG EDITX_CACHE_DIR=/data/cache" in dockerfile
    assert "ARG EDITX_VOICES_DIR=/data/voices" in dockerfile
    # deploy/image/slim-install.sh runs inside the build, before uv installs the packages.
    (embedded,) = re.findall(r"^RUN echo (\S+) \| base64 -d \| sh$", dockerfile, flags=re.M)
    assert base64.b64decode(embedded) == (ROOT / "deploy" / "image" / "slim-install.sh").read_bytes()
    assert dockerfile.index("base64 -d | sh") < dockerfile.index("pip install -r")
    assert "ARG UV_OVERRIDE=/etc/editx-uv-overrides.txt" in dockerfile
    assert "requirements.txt" in dockerfile
    assert "ENV EDITX_MODEL_PATH=$EDITX_MODEL_PATH" in dockerfile and "ARG EDITX_MODEL_PATH=/models" in dockerfile
    names = {re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0].lower()
             for line in requirements.splitlines() if line and not line.startswith(("#", "-"))}
    missing = [n for n in NEEDED if n not in names]
    assert not missing, f"requirements.txt lacks {missing}"
    # The pins are pyproject's, not whatever the build machine happens to have.
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in pins:
        assert pin in requirements, pin


def test_bento_carries_the_code_and_not_the_tests(bento_dir: Path) -> None:
    src = bento_dir / "src"
    for path in ("service.py", "runners/engine.py", "api/status.py", "api/native/routes.py", "ui/app.py", "runners/models/tiny/__init__.py"):
        assert (src / path).is_file(), path
    assert not (src / "tests").exists() and not (src / ".venv").exists()
    assert not list(src.rglob("__pycache__"))
    bento_yaml = (bento_dir / "bento.yaml").read_text()
    assert "service: service:EditXService" in bento_yaml
    assert "gpu: 1" in bento_yaml and "timeout: 600" in bento_yaml
