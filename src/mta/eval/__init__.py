"""Evaluation: the toy task's error (more to come: perplexity per domain, needle in a haystack)."""

from .toy import IGNORE_INDEX, encode_batch, evaluate_toy

__all__ = ["IGNORE_INDEX", "encode_batch", "evaluate_toy"]
