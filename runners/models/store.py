"""Find the model root and check that it has the official layout.

The root holds two sibling folders, exactly as the official releases ship them
(UPSTREAM.md §1.1)::

    ROOT/Step-Audio-Tokenizer/   linguistic_tokenizer.npy, speech_tokenizer_v1.onnx,
                                 dengcunqin/speech_paraformer-…-online/ (FunASR folder)
    ROOT/Step-Audio-EditX/       config.json, *.safetensors, tokenizer.model,
                                 CosyVoice-300M-25Hz/ (cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx)

With ``EDITX_LLM_QUANTIZATION=awq`` the LLM comes from the AWQ-4bit checkpoint
folder instead, found in either official layout (the first that exists wins)::

    ROOT/Step-Audio-EditX-AWQ-4bit/      beside Step-Audio-EditX/ (the published repository)
    ROOT/Step-Audio-EditX/awq-4bit/      where upstream's quantization script writes it

The AWQ folder needs config.json (with its compressed-tensors quantization_config)
and *.safetensors. The text tokenizer is its tokenizer.model when it has one,
otherwise Step-Audio-EditX/'s. The decoder (CosyVoice-300M-25Hz/) comes from
Step-Audio-EditX/ when that has it, otherwise from the AWQ folder: the AWQ
release may ship without it, and the decoder is the same for every LLM variant.

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
AWQ_DIR = "Step-Audio-EditX-AWQ-4bit"  # beside LLM_DIR
AWQ_SUBDIR = "awq-4bit"  # or inside LLM_DIR
HF_AWQ_REPO = "stepfun-ai/Step-Audio-EditX-AWQ-4bit"

# Files every part of the engine reads; relative to the root.
_FUNASR_FILES = ("config.yaml", "model.pt", "am.mvn")
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
    awq: bool = False  # the LLM is the AWQ-4bit checkpoint folder (see the module doc)

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
    def awq_candidates(self) -> tuple[Path, Path]:
        """Where the AWQ-4bit folder may be, in the order they are tried."""
        return self.root / AWQ_DIR, self.llm_dir / AWQ_SUBDIR

    @property
    def awq_dir(self) -> Path | None:
        """The AWQ-4bit folder that exists, or None."""
        return next((p for p in self.awq_candidates if p.is_dir()), None)

    @property
    def llm_weights_dir(self) -> Path:
        """The folder the LLM's config.json and weights are read from."""
        if not self.awq:
            return self.llm_dir
        return self.awq_dir or self.awq_candidates[0]

    @property
    def text_tokenizer_dir(self) -> Path:
        """The folder holding tokenizer.model: the LLM's own, else Step-Audio-EditX/."""
        if self.awq and (self.llm_weights_dir / "tokenizer.model").is_file():
            return self.llm_weights_dir
        return self.llm_dir

    @property
    def decoder_dir(self) -> Path:
        base = self.llm_dir / DECODER_DIR
        if self.awq and not base.is_dir() and (self.llm_weights_dir / DECODER_DIR).is_dir():
            return self.llm_weights_dir / DECODER_DIR
        return base

    def required_files(self) -> list[Path]:
        files = [self.kmeans, self.vq06_onnx]
        files += [self.funasr_dir / f for f in _FUNASR_FILES]
        files += [self.llm_weights_dir / "config.json", self.text_tokenizer_dir / "tokenizer.model"]
        files += [self.decoder_dir / f for f in _DECODER_FILES]
        return files

    def missing_files(self) -> list[Path]:
        missing = [p for p in self.required_files() if not p.is_file()]
        weights = self.llm_weights_dir
        if not weights.is_dir() or not any(weights.glob("*.safetensors")):
            missing.append(weights / "*.safetensors")
        return missing

    def check(self) -> "ModelPaths":
        if self.awq and self.awq_dir is None:
            first, second = self.awq_candidates
            raise ModelLayoutError(
                f"EDITX_LLM_QUANTIZATION=awq needs the AWQ-4bit checkpoint folder, and model root {self.root} "
                f"has none: neither {first}/ nor {second}/ exists. Download {HF_AWQ_REPO} into {first}/ "
                f"(beside {LLM_DIR}/), or choose another EDITX_LLM_QUANTIZATION (none, int8, nf4)."
            )
        missing = self.missing_files()
        if missing:
            names = "\n  ".join(str(p) for p in missing)
            raise ModelLayoutError(
                f"model root {self.root} is incomplete; missing {len(missing)} file(s):\n  {names}\n"
                f"Expected the official layout: {TOKENIZER_DIR}/ and {LLM_DIR}/ (with {DECODER_DIR}/) "
                "side by side under one folder."
                + (f" The AWQ-4bit folder in use is {self.llm_weights_dir}/." if self.awq else "")
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
    awq: bool = False,
) -> ModelPaths:
    """Turn EDITX_MODEL_PATH / EDITX_MODEL_SOURCE into a checked :class:`ModelPaths`.

    For a hub source, ``path`` names the LLM repository (``stepfun-ai/Step-Audio-EditX``)
    and the tokenizer repository is fetched beside it, giving the official layout; with
    ``awq`` the AWQ-4bit repository is fetched beside them too.
    """
    text = os.fspath(path)
    kind = detect_source(text, source)
    if kind == "local":
        root = Path(text).expanduser().resolve()
        if not root.is_dir():
            raise ModelLayoutError(f"model root {root} does not exist or is not a folder")
        return ModelPaths(root, funasr_id, awq).check()
    cache = Path(cache_dir or os.environ.get("EDITX_DOWNLOAD_DIR", "~/.cache/editx-serve/models")).expanduser()
    llm = _download(text, kind, cache)
    tokenizer = _download(HF_TOKENIZER_REPO, kind, cache)
    folders = [(LLM_DIR, llm), (TOKENIZER_DIR, tokenizer)]
    if awq:
        folders.append((AWQ_DIR, _download(HF_AWQ_REPO, kind, cache)))
    root = cache / "root"
    root.mkdir(parents=True, exist_ok=True)
    for name, src in folders:
        link = root / name
        if not link.exists():
            link.symlink_to(src, target_is_directory=True)
    return ModelPaths(root, funasr_id, awq).check()
