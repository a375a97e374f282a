"""Evaluation: the toy task's error (toy), perplexity per domain (ppl), and long contexts: multi-needle retrieval
(needle) and bAbI in distractor text (babi), both scored by log-likelihood choice accuracy (choice) on held-out
corpus text (background)."""

from .toy import IGNORE_INDEX, encode_batch, evaluate_toy

__all__ = ["IGNORE_INDEX", "encode_batch", "evaluate_toy"]
