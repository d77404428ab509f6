"""DARTS data-parallel over 2 CPU processes (gloo): the replicas stay identical, with the
cures for the collapse on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as multiprocessing

from pynas.data import load_dataset
from pynas.search.darts import DartsConfig
from pynas.search.darts.search import process_group, train_supernet

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _replica(rank: int, port: int, out: str) -> None:
    """One torchrun-like process: the environment torchrun would set, then the search."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
    )  # fmt: skip
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different local randomness: only synchronisation aligns them
    # with the cures whose randomness (Dirichlet samples) or parameters (edge logits) the
    # processes must keep in step
    config = DartsConfig(channels=4, layers=3, steps=2, multiplier=2, batch_size=8,
                         limit_train=64, mixed_op="reference", epochs=2, order=2,
                         partial_channels=2, edge_normalization=True, dirichlet=True,
                         aux_skip=True, beta_decay=1.0)  # fmt: skip
    with process_group("cpu") as (process_rank, world_size):
        assert (process_rank, world_size) == (rank, WORLD_SIZE)
        data = load_dataset("digits", limit_train=config.limit_train)
        trained = train_supernet(config, data)
        initial = trained.history[0]["alphas"]
    torch.save(
        {"state": trained.model.state_dict(), "history": trained.history, "initial": initial},
        Path(out) / f"rank{rank}.pt",
    )


@pytest.mark.slow
def test_two_processes_keep_identical_weights_and_alphas(tmp_path):
    multiprocessing.spawn(_replica, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE)
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE))
    assert first["state"].keys() == second["state"].keys()
    for name, tensor in first["state"].items():
        assert torch.equal(tensor, second["state"][name]), name
    # the replicas trained on different shards of each batch order...
    losses = [[e["train_loss"] for e in run["history"][1:]] for run in (first, second)]
    assert losses[0] != losses[1]
    # ...and the architecture did move away from where both started
    final = torch.softmax(first["state"]["alpha_normal"].double(), dim=-1)
    assert not torch.allclose(
        final, torch.tensor(first["initial"]["normal"], dtype=torch.float64), atol=1e-6
    )
