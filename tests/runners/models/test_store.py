"""Model store: layout checks name every missing file; hub ids fail fast without a network."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runners.config import EngineConfig
from runners.models.store import (
    DEFAULT_FUNASR_ID,
    ModelDownloadError,
    ModelLayoutError,
    ModelPaths,
    detect_source,
    resolve_model_root,
)


def _touch_layout(root: Path) -> ModelPaths:
    paths = ModelPaths(root)
    for f in paths.required_files():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    (paths.llm_dir / "model-00001.safetensors").write_bytes(b"x")
    return paths


def test_complete_layout_resolves(tmp_path: Path) -> None:
    _touch_layout(tmp_path)
    paths = resolve_model_root(tmp_path, "local")
    assert paths.funasr_dir == tmp_path / "Step-Audio-Tokenizer" / DEFAULT_FUNASR_ID
    assert paths.decoder_dir == tmp_path / "Step-Audio-EditX" / "CosyVoice-300M-25Hz"


def test_every_missing_file_is_named(tmp_path: Path) -> None:
    paths = _touch_layout(tmp_path)
    (paths.decoder_dir / "flow.pt").unlink()
    paths.kmeans.unlink()
    with pytest.raises(ModelLayoutError) as err:
        resolve_model_root(tmp_path)
    message = str(err.value)
    assert "missing 2 file(s)" in message
    assert "flow.pt" in message and "linguistic_tokenizer.npy" in message


def test_missing_weights_shard_is_named(tmp_path: Path) -> None:
    paths = _touch_layout(tmp_path)
    (paths.llm_dir / "model-00001.safetensors").unlink()
    with pytest.raises(ModelLayoutError, match=r"\*\.safetensors"):
        resolve_model_root(tmp_path)


def test_nonexistent_local_path_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLayoutError, match="does not exist"):
        resolve_model_root(tmp_path / "nowhere", "local")


def test_source_detection_follows_upstream_rules(tmp_path: Path) -> None:
    assert detect_source(str(tmp_path), "auto") == "local"
    assert detect_source("stepfun-ai/Step-Audio-EditX", "auto") == "huggingface"
    assert detect_source("modelscope/Step-Audio-EditX", "auto") == "modelscope"
    assert detect_source("stepfun-ai/Step-Audio-EditX", "modelscope") == "modelscope"
    assert detect_source("/models/editx", "auto") == "local"


def test_hub_id_without_network_fails_fast_and_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelDownloadError) as err:
        resolve_model_root("stepfun-ai/Step-Audio-EditX", "huggingface", cache_dir=tmp_path)
    assert time.monotonic() - start < 30
    assert "stepfun-ai/Step-Audio-EditX" in str(err.value)
    assert "EDITX_MODEL_PATH" in str(err.value)


def test_config_reads_environment() -> None:
    cfg = EngineConfig.from_env({"EDITX_MODEL_PATH": "/m", "EDITX_MAX_AUDIO_S": "12.5", "EDITX_DEVICE": "cpu"})
    assert cfg.model_path == "/m" and cfg.max_audio_s == 12.5 and str(cfg.torch_device()) == "cpu"
    assert not cfg.is_tiny and EngineConfig.from_env({}).is_tiny
    assert str(cfg.llm_torch_dtype()) == "torch.float32"  # CPU default
