"""One onnxruntime session per model file, serialized by a lock.

The official checkpoint ships two ONNX models (the vq06 speech tokenizer and
the CAM++ speaker model). Sessions are run one call at a time because a
request burst must not oversubscribe the CPU threads or the CUDA stream.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch


def providers_for(device: torch.device | str) -> list[str]:
    """CUDA provider when the engine runs on CUDA and this onnxruntime build has it."""
    dev = torch.device(device)
    available = ort.get_available_providers()
    if dev.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """A loaded ONNX model; ``run`` is thread-safe."""

    def __init__(self, path: Path | str, device: torch.device | str = "cpu", threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers_for(device))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            return self.session.run(None, inputs)
