"""What a DARTS search computes from: :class:`DartsConfig` and its command-line options."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

from pynas.costs import parse_count
from pynas.errors import UsageError
from pynas.objectives import parse_objectives
from pynas.search.darts.selection import SELECTIONS
from pynas.search.darts.supernet import MIXED_OP_KINDS

#: supernets DARTS can search, by ``--space``
SUPERNET_SPACES = ("darts", "nb201")
#: the cost measures ``--cost-target`` can set (a per-operation table adds them up)
COST_TARGET_MEASURES = ("flops", "params")
#: the weight of the cost term without ``--cost-weight``, chosen on tuning seeds (see
#: bench/RESULTS.md, "DARTS cost target"): 1 and 10 leave the nb201 cell 2-11 times over a
#: 25th-percentile target, as beta-decay's gradient swamps the term's (see
#: :mod:`pynas.search.darts.cost`)
DEFAULT_COST_WEIGHT = 100.0
#: how far from ``--cost-target`` the discretized cell may lie without ``--cost-tolerance``
#: (a quarter either way, the band of issue #12's target)
DEFAULT_COST_TOLERANCE = 0.25


@dataclass
class DartsConfig:
    """Everything a DARTS search computes from (the Python API behind the command).

    The defaults are small enough for the digits dataset on two CPU cores in a few
    minutes; the paper's CIFAR-10 search is ``channels=16, layers=8, epochs=50``. Of the
    cures for the collapse (see :mod:`pynas.search.darts.cures`) beta-decay is on by
    default (``beta_decay=0`` is the paper's DARTS), the others off; PC-DARTS's CIFAR-10
    search is ``partial_channels=4, edge_normalization=True, warmup_epochs=15`` (with
    ``batch_size=256``).
    """

    space: str = "darts"
    dataset: str = "digits"
    data_dir: str | None = None
    limit_train: int | None = None
    epochs: int = 10
    batch_size: int = 64
    order: int = 1
    mixed_op: str = "fused"
    channels: int = 8
    layers: int = 5
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    arch_lr: float = 3e-4
    #: PC-DARTS: 1/K of the channels go through the operations (1: all)
    partial_channels: int = 1
    #: PC-DARTS: a softmax-normalised weight per edge over each node's inputs
    edge_normalization: bool = False
    #: beta-DARTS: the final weight of the beta-decay regularization (0: off, the paper's
    #: DARTS). On by default: the one cure that never collapsed where plain DARTS does
    #: (bench/RESULTS.md, "DARTS collapse")
    beta_decay: float = 50.0
    #: DARTS-: an identity path beside each normal edge, decaying from 1 to 0
    aux_skip: bool = False
    #: weight-only epochs before the architecture moves
    warmup_epochs: int = 0
    #: DrNAS: Dirichlet-sampled mixed weights
    dirichlet: bool = False
    #: how the discrete cell is chosen: ``argmax`` of the weights or ``perturbation`` (see
    #: :mod:`pynas.search.darts.selection`)
    selection: str = "argmax"
    #: ``--objectives``: names the cost measure ``cost_target`` sets (flops or params;
    #: flops when ``None``)
    objectives: str | None = None
    #: the cost of the discretized network the search aims at (multiply-adds of one
    #: example or parameters; ``2M`` style text accepted); ``None``: no cost term
    cost_target: int | None = None
    #: the weight of the cost term (``None``: :data:`DEFAULT_COST_WEIGHT`)
    cost_weight: float | None = None
    #: the discretized cell is the strongest one within this fraction of ``cost_target``
    cost_tolerance: float = DEFAULT_COST_TOLERANCE
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.cost_target = parse_count(self.cost_target, "--cost-target")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DartsConfig:
        values = {
            field.name: getattr(args, field.name)
            for field in dataclasses.fields(cls)
            if getattr(args, field.name, None) is not None
        }
        return cls(**values)

    @property
    def cost_measure(self) -> str:
        """The measure ``cost_target`` sets: the one cost of ``objectives``, else flops.

        Raises
        ------
        UsageError
            When ``objectives`` names no cost, several, or one a table cannot price.
        """
        objectives = parse_objectives(self.objectives)
        if objectives is None:
            return "flops"
        names = [objective.name for objective in objectives.costs]
        for name in names:
            if name not in COST_TARGET_MEASURES:
                raise UsageError(
                    f"--objectives {name} is not supported for DARTS: its cost term adds up "
                    "a table of what each operation costs, and only flops and params add "
                    "up over operations (latency and peak memory are measured on whole "
                    "networks)"
                )
        if len(names) != 1:
            raise UsageError(
                "DARTS needs --objectives to name exactly one cost, flops or params, for "
                f"--cost-target; got {', '.join(names) or 'none'} in {objectives}"
            )
        return names[0]

    @property
    def penalty_weight(self) -> float:
        """The cost term's weight: ``cost_weight`` or :data:`DEFAULT_COST_WEIGHT`."""
        return DEFAULT_COST_WEIGHT if self.cost_weight is None else self.cost_weight

    def check(self) -> None:
        """Raise :class:`UsageError` for settings no search can run with."""
        if self.space not in SUPERNET_SPACES:
            raise UsageError(
                f"darts cannot search the space {self.space!r}; it has supernets for "
                f"{', '.join(SUPERNET_SPACES)}"
            )
        if self.epochs < 1 or self.batch_size < 2:
            raise UsageError("darts needs --epochs >= 1 and --batch-size >= 2")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UsageError(
                f"--warmup-epochs must be in 0..epochs-1 = {self.epochs - 1} (the "
                f"architecture must move at least one epoch), got {self.warmup_epochs}"
            )
        if self.partial_channels < 1 or self.channels % self.partial_channels:
            raise UsageError(
                f"--partial-channels must be a divisor of --channels {self.channels}, got "
                f"{self.partial_channels}"
            )
        if self.beta_decay < 0:
            raise UsageError(f"--beta-decay must be >= 0, got {self.beta_decay}")
        if self.selection not in SELECTIONS:
            raise UsageError(
                f"--selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}"
            )
        if self.selection != "argmax" and self.cost_target is not None:
            raise UsageError(
                "--selection perturbation does not combine with --cost-target, which "
                "chooses the cell within its tolerance by the operation weights"
            )
        self._check_cost_target()

    def _check_cost_target(self) -> None:
        self.cost_measure  # noqa: B018 (refuses objectives it cannot set)
        if self.cost_target is None:
            if self.objectives is not None:
                raise UsageError(
                    "DARTS needs --cost-target with --objectives: it trains one supernet, "
                    "whose cost it steers toward a target rather than a Pareto front"
                )
            if self.cost_weight is not None:
                raise UsageError("--cost-weight needs --cost-target, the cost it weighs")
            if self.cost_tolerance != DEFAULT_COST_TOLERANCE:
                raise UsageError("--cost-tolerance needs --cost-target, the cost it bounds")
            return
        if not (math.isfinite(self.cost_tolerance) and self.cost_tolerance >= 0):
            raise UsageError(f"--cost-tolerance must be a number >= 0, got {self.cost_tolerance}")
        if not (math.isfinite(self.penalty_weight) and self.penalty_weight > 0):
            raise UsageError(f"--cost-weight must be a number > 0, got {self.cost_weight}")
        if self.space == "darts" and self.multiplier != self.steps:
            raise UsageError(
                "--cost-target on the darts space needs --multiplier = --steps: the cost "
                "is measured on the darts space, whose cells concatenate every node"
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """DARTS's own options (``pynas search`` adds --dataset, --epochs, --seed, --out...)."""
    defaults = DartsConfig()
    # this strategy's defaults for the shared options
    parser.set_defaults(space=defaults.space, epochs=defaults.epochs,
                        batch_size=defaults.batch_size)
    group = parser.add_argument_group("darts")
    group.add_argument(
        "--order",
        type=int,
        choices=(1, 2),
        default=defaults.order,
        help="1: first-order; 2: unrolled second-order (default: %(default)s)",
    )
    group.add_argument(
        "--mixed-op",
        choices=MIXED_OP_KINDS,
        default=defaults.mixed_op,
        help="node combine: the fused kernel or the PyTorch reference (default: %(default)s)",
    )
    group.add_argument(
        "--channels",
        type=int,
        default=defaults.channels,
        help="initial channels C of the supernet (default: %(default)s)",
    )
    group.add_argument(
        "--layers",
        type=int,
        default=defaults.layers,
        help="cells of the darts supernet; cells per stage on nb201 (default: %(default)s)",
    )
    group.add_argument(
        "--steps",
        type=int,
        default=defaults.steps,
        help="intermediate nodes per darts cell (default: %(default)s)",
    )
    group.add_argument(
        "--multiplier",
        type=int,
        default=defaults.multiplier,
        help="last nodes concatenated into a cell's output (default: %(default)s)",
    )
    group.add_argument(
        "--stem-multiplier",
        type=int,
        default=defaults.stem_multiplier,
        help="stem channels = this x C (default: %(default)s)",
    )
    group.add_argument(
        "--weight-lr",
        type=float,
        default=defaults.weight_lr,
        help="initial SGD learning rate of the weights (default: %(default)s)",
    )
    group.add_argument(
        "--weight-lr-min",
        type=float,
        default=defaults.weight_lr_min,
        help="final (cosine) learning rate (default: %(default)s)",
    )
    group.add_argument(
        "--arch-lr",
        type=float,
        default=defaults.arch_lr,
        help="Adam learning rate of the architecture (default: %(default)s)",
    )
    cost = parser.add_argument_group(
        "darts: cost target (the measure: the one cost of --objectives, flops or params; "
        "flops without --objectives)"
    )
    cost.add_argument(
        "--cost-target",
        metavar="COUNT",
        help="steer the search toward a discretized network of this cost (multiply-adds "
        "of one example, or parameters; 500k, 2M, 1.5G): adds weight * log(cost / "
        "target)^2 to the architecture loss, the cost being the discretized network's in "
        "value and the expected cost over the (sharpened) operation weights in gradient",
    )
    cost.add_argument(
        "--cost-weight",
        type=float,
        metavar="W",
        help=f"weight of the cost term (default: {DEFAULT_COST_WEIGHT:g}, chosen on tuning "
        "seeds of the nb201 supernet on digits with beta-decay on; see bench/RESULTS.md)",
    )
    cost.add_argument(
        "--cost-tolerance",
        type=float,
        metavar="F",
        help="the discretized cell is the one of highest operation weights among those "
        "whose cost is within F of the target (|cost / target - 1| <= F; the argmax cell "
        "when it is), or the cell nearest the target when none is (default: "
        f"{DEFAULT_COST_TOLERANCE:g})",
    )
    cures = parser.add_argument_group(
        "darts: cures for the collapse to parameter-free operations (beta-decay on by "
        "default, the others off)"
    )
    cures.add_argument(
        "--partial-channels",
        type=int,
        metavar="K",
        default=defaults.partial_channels,
        help="PC-DARTS: 1/K of each edge's channels go through its operations, the rest "
        "bypass it (the paper: 4; default: %(default)s, every channel)",
    )
    cures.add_argument(
        "--edge-normalization",
        action="store_true",
        help="PC-DARTS: weigh each node's input edges by a softmax of per-edge logits, "
        "which also rank the edges when discretizing",
    )
    cures.add_argument(
        "--beta-decay",
        type=float,
        metavar="W",
        default=defaults.beta_decay,
        help="beta-DARTS: add lambda * mean over edges of logsumexp(alpha) to the "
        "architecture loss, lambda rising linearly from 0 to W (default: %(default)s, "
        "beta-DARTS's NAS-Bench-201 setting, chosen because plain DARTS collapses where it "
        "does not; 0: the paper's DARTS)",
    )
    cures.add_argument(
        "--aux-skip",
        action="store_true",
        help="DARTS-: an identity path beside each normal edge, its coefficient decaying "
        "linearly from 1 to 0 over the search",
    )
    cures.add_argument(
        "--warmup-epochs",
        type=int,
        metavar="N",
        default=defaults.warmup_epochs,
        help="train the weights alone for the first N epochs (PC-DARTS: 15 of 50; "
        "default: %(default)s)",
    )
    cures.add_argument(
        "--dirichlet",
        action="store_true",
        help="DrNAS: each edge's operation weights are a Dirichlet sample of concentration "
        "elu(alpha) + 1",
    )
    cures.add_argument(
        "--selection",
        choices=SELECTIONS,
        default=defaults.selection,
        help="how the cell is chosen at the end: argmax, each edge's operation of highest "
        "weight; perturbation, the operation (not none) whose removal raises the "
        "supernet's loss on the architecture's half of the data the most, on the edges "
        "the argmax keeps (DARTS-PT, without its fine-tuning). A finished run can be "
        "chosen again with --resume --selection (default: %(default)s)",
    )
