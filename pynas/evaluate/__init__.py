"""Performance estimation: train an architecture, or read its score from a benchmark."""
from pynas.evaluate.base import Evaluator
from pynas.evaluate.function import Candidate, FunctionEvaluator
from pynas.evaluate.nats import NATSEvaluator
from pynas.evaluate.table import TableEvaluator, read_table
from pynas.evaluate.train import TrainEvaluator

__all__ = [
    "Candidate",
    "Evaluator",
    "FunctionEvaluator",
    "NATSEvaluator",
    "TableEvaluator",
    "TrainEvaluator",
    "read_table",
]
