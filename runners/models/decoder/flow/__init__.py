"""Our flow-matching decoder (tokens → mel), loading the official ``flow.pt`` unchanged."""

from runners.models.decoder.flow.cfm import CausalConditionalCFM, cosine_time_grid, seeded_noise
from runners.models.decoder.flow.dit import DiT
from runners.models.decoder.flow.embedding import DualCodebookEmbedding
from runners.models.decoder.flow.encoder import UpsampleConformerEncoderV2
from runners.models.decoder.flow.flow import CausalMaskedDiffWithXvec, FlowRow, expected_flow_state_shapes

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
