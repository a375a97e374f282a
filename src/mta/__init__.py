"""mta: Multi-Token Attention (Golovneva et al., 2025, arXiv 2504.00927) as an exact, memory-efficient PyTorch op.

The public API: the op `mta_attention` and its decoding step `mta_attention_step`; the attention layer
`MultiTokenAttention` and its `AttentionConfig`; the decoder `DecoderLM` and its `ModelConfig`, built from named
presets (`list_presets`, `get_preset`). `import mta` does not import transformers: the Hugging Face classes
(mta.models.hf) are registered with transformers' Auto classes when transformers is imported.
"""

from .layers import AttentionConfig, MultiTokenAttention
from .models import DecoderLM, ModelConfig, get_preset, list_presets
from .models.hf_support import register_with_transformers
from .ops import mta_attention
from .ops.decode import mta_attention_step

__version__ = "0.2.0"
__all__ = [
    "AttentionConfig",
    "DecoderLM",
    "ModelConfig",
    "MultiTokenAttention",
    "__version__",
    "get_preset",
    "list_presets",
    "mta_attention",
    "mta_attention_step",
]

register_with_transformers()
