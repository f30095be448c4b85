"""Find the model root and check that it has the official layout.

The root holds two sibling folders, exactly as the official releases ship them
(UPSTREAM.md §1.1)::

    ROOT/Step-Audio-Tokenizer/   linguistic_tokenizer.npy, speech_tokenizer_v1.onnx,
                                 dengcunqin/speech_paraformer-…-online/ (FunASR folder)
    ROOT/Step-Audio-EditX/       config.json, *.safetensors, tokenizer.model,
                                 CosyVoice-300M-25Hz/ (cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx)

A local path is never sent to a hub. A hub id is downloaded only through the
hub's own client and fails fast, with one message, when there is no network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelSource = Literal["auto", "local", "huggingface", "modelscope"]

TOKENIZER_DIR = "Step-Audio-Tokenizer"
LLM_DIR = "Step-Audio-EditX"
DECODER_DIR = "CosyVoice-300M-25Hz"
DEFAULT_FUNASR_ID = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
HF_TOKENIZER_REPO = "stepfun-ai/Step-Audio-Tokenizer"
HF_LLM_REPO = "stepfun-ai/Step-Audio-EditX"

# Files every part of the engine reads; relative to the root.
_FUNASR_FILES = ("config.yaml", "model.pt", "am.mvn")
_LLM_FILES = ("config.json", "tokenizer.model")
_DECODER_FILES = ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx")


class ModelLayoutError(FileNotFoundError):
    """The model root is missing files; the message names every one of them."""


class ModelDownloadError(RuntimeError):
    """A hub id could not be fetched (no network, unknown id, no client)."""


@dataclass(frozen=True)
class ModelPaths:
    """Where each part of the official checkpoint lives under one root."""

    root: Path
    funasr_id: str = DEFAULT_FUNASR_ID

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / TOKENIZER_DIR

    @property
    def funasr_dir(self) -> Path:
        return self.tokenizer_dir / self.funasr_id

    @property
    def kmeans(self) -> Path:
        return self.tokenizer_dir / "linguistic_tokenizer.npy"

    @property
    def vq06_onnx(self) -> Path:
        return self.tokenizer_dir / "speech_tokenizer_v1.onnx"

    @property
    def llm_dir(self) -> Path:
        return self.root / LLM_DIR

    @property
    def decoder_dir(self) -> Path:
        return self.llm_dir / DECODER_DIR

    def required_files(self) -> list[Path]:
        files = [self.kmeans, self.vq06_onnx]
        files += [self.funasr_dir / f for f in _FUNASR_FILES]
        files += [self.llm_dir / f for f in _LLM_FILES]
        files += [self.decoder_dir / f for f in _DECODER_FILES]
        return files

    def missing_files(self) -> list[Path]:
        missing = [p for p in self.required_files() if not p.is_file()]
        if self.llm_dir.is_dir() and not any(self.llm_dir.glob("*.safetensors")):
            missing.append(self.llm_dir / "*.safetensors")
        elif not self.llm_dir.is_dir():
            missing.append(self.llm_dir / "*.safetensors")
        return missing

    def check(self) -> "ModelPaths":
        missing = self.missing_files()
        if missing:
            names = "\n  ".join(str(p) for p in missing)
            raise ModelLayoutError(
                f"model root {self.root} is incomplete; missing {len(missing)} file(s):\n  {names}\n"
                f"Expected the official layout: {TOKENIZER_DIR}/ and {LLM_DIR}/ (with {DECODER_DIR}/) "
                "side by side under one folder."
            )
        return self


def _looks_like_hub_id(path: str) -> bool:
    return not os.path.isabs(path) and path.count("/") == 1 and not path.startswith(".")


def detect_source(path: str, source: ModelSource) -> ModelSource:
    """Upstream's rule: an existing or absolute path is local; owner/name is a hub id."""
    if source != "auto":
        return source
    if Path(path).expanduser().exists() or os.path.isabs(path) or not _looks_like_hub_id(path):
        return "local"
    return "modelscope" if "modelscope" in path.lower() else "huggingface"


def _download(repo_id: str, source: ModelSource, cache_dir: Path) -> Path:
    """Fetch one repository snapshot with the hub's own client."""
    target = cache_dir / repo_id.replace("/", "--")
    try:
        if source == "huggingface":
            from huggingface_hub import snapshot_download
            from huggingface_hub.utils import HfHubHTTPError  # noqa: F401  (import proves the client is there)

            os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
            os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
            return Path(snapshot_download(repo_id, local_dir=target))
        from modelscope import snapshot_download as ms_snapshot_download  # type: ignore[import-not-found]

        return Path(ms_snapshot_download(repo_id, local_dir=str(target)))
    except ImportError as exc:
        raise ModelDownloadError(f"cannot download {repo_id!r} from {source}: client not installed ({exc})") from exc
    except Exception as exc:  # the hub clients raise many types; the message is what matters
        raise ModelDownloadError(
            f"cannot download {repo_id!r} from {source}: {type(exc).__name__}: {exc}. "
            "Download the model elsewhere and set EDITX_MODEL_PATH to the local folder."
        ) from exc


def resolve_model_root(
    path: str | os.PathLike[str],
    source: ModelSource = "auto",
    *,
    funasr_id: str = DEFAULT_FUNASR_ID,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelPaths:
    """Turn EDITX_MODEL_PATH / EDITX_MODEL_SOURCE into a checked :class:`ModelPaths`.

    For a hub source, ``path`` names the LLM repository (``stepfun-ai/Step-Audio-EditX``)
    and the tokenizer repository is fetched beside it, giving the official layout.
    """
    text = os.fspath(path)
    kind = detect_source(text, source)
    if kind == "local":
        root = Path(text).expanduser().resolve()
        if not root.is_dir():
            raise ModelLayoutError(f"model root {root} does not exist or is not a folder")
        return ModelPaths(root, funasr_id).check()
    cache = Path(cache_dir or os.environ.get("EDITX_DOWNLOAD_DIR", "~/.cache/editx-serve/models")).expanduser()
    llm = _download(text, kind, cache)
    tokenizer = _download(HF_TOKENIZER_REPO, kind, cache)
    root = cache / "root"
    root.mkdir(parents=True, exist_ok=True)
    for name, src in ((LLM_DIR, llm), (TOKENIZER_DIR, tokenizer)):
        link = root / name
        if not link.exists():
            link.symlink_to(src, target_is_directory=True)
    return ModelPaths(root, funasr_id).check()
