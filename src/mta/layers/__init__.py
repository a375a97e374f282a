"""Attention layers built on `mta.ops.mta_attention` (docs/spec.md §2) and the paper's baselines (§3)."""

from .attention import MultiTokenAttention, SoftmaxAttention, TalkingHeadsAttention
from .config import MTA_OPTIONS, AttentionConfig, check_kernel_size, lambda_init
from .diff import DiffAttention
from .factory import ATTENTION_KINDS, build_attention
from .norm import RMSNorm
from .rope import apply_rope
from .state import AttentionState

__all__ = [
    "ATTENTION_KINDS",
    "MTA_OPTIONS",
    "AttentionConfig",
    "AttentionState",
    "DiffAttention",
    "MultiTokenAttention",
    "RMSNorm",
    "SoftmaxAttention",
    "TalkingHeadsAttention",
    "apply_rope",
    "build_attention",
    "check_kernel_size",
    "lambda_init",
]
