"""mta: Multi-Token Attention (Golovneva et al., 2025, arXiv 2504.00927) as an exact, memory-efficient PyTorch op."""

from .ops import mta_attention

__version__ = "0.1.0"
__all__ = ["mta_attention", "__version__"]
