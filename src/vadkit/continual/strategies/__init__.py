"""Continual-learning strategies, one per module; :data:`STRATEGIES` maps the config's names to them."""

from vadkit.continual.strategies.adapters import Adapters
from vadkit.continual.strategies.base import StepPrediction, Strategy, fit_continuing, state_bytes
from vadkit.continual.strategies.compressed_replay import CompressedReplay
from vadkit.continual.strategies.finetune import Finetune
from vadkit.continual.strategies.joint import Joint
from vadkit.continual.strategies.replay import Replay
from vadkit.continual.strategies.task_banks import SELECTIONS, TaskBanks

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Finetune, Joint, Replay, CompressedReplay, TaskBanks, Adapters)}

__all__ = ["SELECTIONS", "STRATEGIES", "Adapters", "CompressedReplay", "Finetune", "Joint", "Replay", "StepPrediction",
           "Strategy", "TaskBanks", "fit_continuing", "state_bytes"]
