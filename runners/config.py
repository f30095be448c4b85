"""Engine configuration, read from ``EDITX_*`` environment variables.

Every knob a deployment needs lives here, typed and documented, so the
service, the UI, the tests and the benchmarks build the engine the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field, field_validator

from runners.models.store import DEFAULT_FUNASR_ID, ModelSource
from runners.models.step1.quantization import Quantization, parse_quantization

DType = Literal["auto", "bfloat16", "float16", "float32"]
TINY = "tiny"


class EngineConfig(BaseModel):
    model_path: str = Field(TINY, description="model root, HF/ModelScope id, or 'tiny' for random weights")
    model_source: ModelSource = "auto"
    funasr_id: str = DEFAULT_FUNASR_ID
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', …")
    llm_dtype: DType = Field("auto", description="'auto' = bfloat16 on CUDA, float32 on the CPU")
    decoder_dtype: DType = "float32"
    llm_quantization: Quantization = Field(
        "none", description="'none', 'int8' or 'nf4' (bitsandbytes, at load), 'awq' (the AWQ-4bit checkpoint folder)"
    )
    tiny_dir: str = Field("~/.cache/editx-serve/tiny", description="where EDITX_MODEL_PATH=tiny is written")
    max_audio_s: float = Field(30.0, gt=0, description="longest accepted input audio")
    max_text_chars: int = Field(10000, gt=0, description="longest accepted text; a long clone text is split "
                                                         "into sentences generated as one batch")
    max_edit_audio_s: float = Field(600.0, gt=0, description="longest recording /edit accepts; one longer than "
                                    "max_audio_s is cut at pauses into pieces edited as one batch")
    max_script_turns: int = Field(100, gt=0, description="most turns in one dialogue script")
    max_script_voices: int = Field(8, gt=0, description="most distinct voices in one dialogue script")
    max_total_tokens: int = Field(8192, gt=0, description="LLM budget: prompt + generated tokens")
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0)
    temperature: float = Field(0.7, gt=0)
    cache_enabled: bool = Field(True, description="cache prompt features (tokens, mel, speaker, transcript)")
    cache_dir: str = Field("~/.cache/editx-serve/prompt-cache", description="persistent cache folder; '' = memory only")
    voices_dir: str = Field("~/.cache/editx-serve/voices",
                            description="registered voices (audio, transcript, prompt features); share it between replicas")
    cache_max_entries: int = Field(256, gt=0)
    cache_max_disk_mb: int = Field(2048, gt=0)
    auto_transcribe: bool = Field(
        True, description="transcribe the input audio with Whisper when prompt_text / audio_text is empty"
    )
    lazy_load: bool = Field(False, description="load on the first request instead of at start")
    idle_unload_s: float = Field(0.0, ge=0, description="unload after this many idle seconds; 0 = never")
    idle_action: Literal["unload", "offload"] = Field(
        "unload", description="'offload' keeps the weights in CPU memory instead (fast to bring back)"
    )
    max_new_tokens: int | None = Field(
        None, gt=0, description="cap on generated tokens; unset = the official rule (prompt + output ≤ max_total_tokens)"
    )

    max_batch: int = Field(16, gt=0, description="requests decoded together in one LLM step (continuous batching)")
    max_queue: int = Field(64, ge=0, description="requests waiting for a slot; beyond it a request gets 503")
    decoder_batch: int = Field(16, gt=0, description="decode jobs (whole answers and stream chunks of all requests) "
                                                     "run as one flow + vocoder batch; 1 = one at a time")
    decoder_batch_frames: int | None = Field(
        None, ge=0, description="most padded flow frames (rows × the longest row's prompt + generated tokens, "
        "25 a second) in one decoder batch; unset = 3000 on a CPU (there a batch of four 50 s rows ran slower "
        "than the rows one by one), no limit on CUDA; 0 = no limit")
    prefix_cache_tokens: int = Field(
        8192, ge=0, description="prompt heads (a voice's system turn, the edit persona) kept as K/V so requests "
        "that share one prefill it once, in tokens (32 KiB each for the official model in bf16); 0 = off")
    cuda_graphs: Literal["auto", "0", "1"] = Field(
        "auto", description="capture the decode step as CUDA graphs per batch/length bucket; auto = on CUDA"
    )

    log_content: bool = Field(
        False, description="write transcripts, texts and edit values to the logs (and /logs); off = sizes only"
    )
    audio_only_decoding: bool | None = Field(
        None, description="sample only audio ids and EOS; unset = on for tiny random models, off (official) otherwise"
    )

    @field_validator("llm_quantization", mode="before")
    @classmethod
    def _known_quantization(cls, value: object) -> str:
        """Accept upstream's spellings (int4, awq-4bit); refuse anything else, naming the choices."""
        return parse_quantization(str(value) if value is not None else None)

    @property
    def is_tiny(self) -> bool:
        return self.model_path == TINY

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def llm_torch_dtype(self) -> torch.dtype:
        return _resolve_dtype(self.llm_dtype, self.torch_device())

    def decoder_torch_dtype(self) -> torch.dtype:
        return _resolve_dtype(self.decoder_dtype, self.torch_device())

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "EngineConfig":
        """Build from ``EDITX_<FIELD>`` variables (e.g. EDITX_MODEL_PATH, EDITX_MAX_AUDIO_S)."""
        env = dict(os.environ if env is None else env)
        values = {name: env[f"EDITX_{name.upper()}"] for name in cls.model_fields if f"EDITX_{name.upper()}" in env}
        return cls(**values)

    def tiny_root(self) -> Path:
        return Path(self.tiny_dir).expanduser()


def _resolve_dtype(name: DType, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
