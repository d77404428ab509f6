"""Reinforcement-learning search: an LSTM controller trained with REINFORCE."""
from pynas.search.rl.controller import Controller, RolloutSample
from pynas.spaces.program import Step, StepKind, cell_program, decision_program

__all__ = ["Controller", "RolloutSample", "Step", "StepKind", "cell_program", "decision_program"]
