"""mta: Multi-Token Attention (Golovneva et al., 2025, arXiv 2504.00927) as an exact, memory-efficient PyTorch op."""

from .models.hf_support import register_with_transformers
from .ops import mta_attention

__version__ = "0.2.0"
__all__ = ["mta_attention", "__version__"]

register_with_transformers()  # lazily: `import mta` does not import transformers
