"""Native Step1 (the Step-Audio-EditX LLM); importing registers it with transformers' Auto classes."""

from runners.step1.configuration import OFFICIAL_CONFIG, Step1Config, expected_state_shapes
from runners.step1.modeling import (
    Step1ForCausalLM,
    Step1Model,
    alibi_slopes,
    register_step1,
    sqrt_alibi_bias,
)

__all__ = [
    "OFFICIAL_CONFIG",
    "Step1Config",
    "Step1ForCausalLM",
    "Step1Model",
    "alibi_slopes",
    "expected_state_shapes",
    "register_step1",
    "sqrt_alibi_bias",
]
