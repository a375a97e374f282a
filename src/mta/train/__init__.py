"""Training: the language-model trainer (`train_lm`), the toy-task trainer and the parts any trainer reuses
(schedule, seeded stream, metrics, device)."""

from .lm import train_lm
from .lm_config import PARALLEL, LMTrainConfig
from .metrics import JsonlLog
from .runtime import PRECISIONS, autocast_dtype, resolve_device
from .schedule import lr_factor, warmup_schedule
from .stream import SeededBatches
from .toy import ARCHS, COMPILE_MODES, DATA_SOURCES, ToyRun, ToyTrainConfig, train_toy
from .toy_stack import ToyStack, train_toy_stack

__all__ = [
    "ARCHS",
    "COMPILE_MODES",
    "DATA_SOURCES",
    "JsonlLog",
    "LMTrainConfig",
    "PARALLEL",
    "PRECISIONS",
    "SeededBatches",
    "ToyRun",
    "ToyStack",
    "ToyTrainConfig",
    "autocast_dtype",
    "lr_factor",
    "resolve_device",
    "train_lm",
    "train_toy",
    "train_toy_stack",
    "warmup_schedule",
]
