"""Our flow-matching decoder (tokens → mel), loading the official ``flow.pt`` unchanged."""

from runners.flow.cfm import CausalConditionalCFM, cosine_time_grid, seeded_noise
from runners.flow.dit import DiT
from runners.flow.embedding import DualCodebookEmbedding
from runners.flow.encoder import UpsampleConformerEncoderV2
from runners.flow.flow import CausalMaskedDiffWithXvec, FlowRow, expected_flow_state_shapes

__all__ = [
    "CausalConditionalCFM",
    "CausalMaskedDiffWithXvec",
    "DiT",
    "DualCodebookEmbedding",
    "FlowRow",
    "UpsampleConformerEncoderV2",
    "cosine_time_grid",
    "expected_flow_state_shapes",
    "seeded_noise",
]
