"""What a DARTS search computes from: :class:`DartsConfig` and its command-line options."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from pynas.errors import UsageError
from pynas.search.darts.supernet import MIXED_OP_KINDS

#: supernets DARTS can search, by ``--space``
SUPERNET_SPACES = ("darts", "nb201")


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
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DartsConfig:
        values = {
            field.name: getattr(args, field.name)
            for field in dataclasses.fields(cls)
            if getattr(args, field.name, None) is not None
        }
        return cls(**values)

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
