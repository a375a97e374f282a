"""mta: Multi-Token Attention (Golovneva et al., 2025, arXiv 2504.00927) as an exact, memory-efficient PyTorch op."""

from .ops import mta_attention

__version__ = "0.2.0"
__all__ = ["mta_attention", "__version__"]


def _register_with_transformers() -> None:
    """With transformers 5.x installed, importing mta.models.hf registers MTAConfig / MTAForCausalLM with its
    Auto classes (no trust_remote_code needed); without it, nothing happens."""
    from .models.hf_support import transformers_supported

    if transformers_supported():
        from .models import hf  # noqa: F401


_register_with_transformers()
