"""Accuracy predictors for progressive search: an LSTM and an MLP, each as an ensemble.

PNAS (Liu et al., ECCV 2018, section 3.3) ranks candidate cells with a predictor trained
on the cells evaluated so far. A cell reaches a predictor as token rows, one row per
block of a fixed number of tokens (``[I1, I2, O1, O2]`` in the pnas space, see
:meth:`pynas.spaces.pnas.PNASSpace.tokens`); cells may have different numbers of rows.

- The LSTM reads the rows in order, one step per row (its tokens' embeddings side by
  side), and regresses the accuracy from its last hidden state: it handles cells of any
  size.
- The MLP embeds each token, concatenates the embeddings of a row, averages the rows
  (the paper's fixed-length encoding) and regresses the accuracy with two hidden layers.

Each is an ensemble of ``members`` networks (the paper uses 5), member ``m`` trained on
the data without fold ``m``; :meth:`SurrogateEnsemble.predict` returns the members' mean
and their standard deviation (the spread). Training is small and quick on a CPU: full
control of its randomness (a seed per fit) makes it exactly repeatable, which a resumed
search relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

#: a cell as a predictor reads it: rows of tokens, every row of the same width
TokenRows = Sequence[Sequence[int]]

KINDS = ("lstm", "mlp")

#: token id of padding; the caller's token ``t`` becomes ``t + 1``
PADDING = 0

#: cells per forward pass when predicting (no gradients: memory is no concern)
PREDICTION_BATCH = 4096


def pad_cells(cells: Sequence[TokenRows]) -> tuple[Tensor, Tensor]:
    """Stack cells of different sizes.

    Returns
    -------
    tokens : Tensor
        (n, max rows, width) int64, the caller's tokens plus one, 0 past a cell's rows.
    rows : Tensor
        (n,) int64, the number of rows of each cell.
    """
    if not cells:
        raise ValueError("no cells given")
    rows = torch.tensor([len(cell) for cell in cells], dtype=torch.int64)
    if int(rows.min()) < 1:
        raise ValueError("every cell needs at least one row of tokens")
    width = len(cells[0][0])
    tokens = torch.full((len(cells), int(rows.max()), width), PADDING, dtype=torch.int64)
    for index, cell in enumerate(cells):
        cell_tokens = torch.as_tensor(cell, dtype=torch.int64)
        if cell_tokens.ndim != 2 or cell_tokens.shape[1] != width:
            raise ValueError(f"cell {index} is not rows of {width} tokens: {cell!r}")
        tokens[index, : len(cell)] = cell_tokens + 1
    return tokens, rows


class LSTMPredictor(nn.Module):
    """Embedding, one-layer LSTM over the rows, linear map of the last hidden state.

    The LSTM takes one step per row, its input the concatenated embeddings of the row's
    tokens: a cell of ``R`` rows is ``R`` steps rather than ``R * W``, which trains in
    fewer steps on the few hundred cells a search has seen.
    """

    def __init__(
        self, vocabulary_size: int, embedding_size: int, hidden_size: int, width: int
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size + 1, embedding_size, padding_idx=PADDING)
        self.lstm = nn.LSTM(width * embedding_size, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, 1)

    def forward(self, tokens: Tensor, rows: Tensor) -> Tensor:
        """``tokens`` (n, R, W) and ``rows`` (n,) from :func:`pad_cells` -> (n,)."""
        steps = self.embedding(tokens).flatten(2)  # (n, R, W * embedding)
        packed = pack_padded_sequence(steps, rows, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # hidden: (1, n, hidden) at each cell's last row
        return self.output(hidden[0]).squeeze(1)


class MLPPredictor(nn.Module):
    """Embed tokens, concatenate each row's, average the rows, two hidden ReLU layers."""

    def __init__(
        self, vocabulary_size: int, embedding_size: int, hidden_size: int, width: int
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size + 1, embedding_size, padding_idx=PADDING)
        self.layers = nn.Sequential(
            nn.Linear(width * embedding_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, tokens: Tensor, rows: Tensor) -> Tensor:
        """``tokens`` (n, R, W) and ``rows`` (n,) from :func:`pad_cells` -> (n,)."""
        row_vectors = self.embedding(tokens).flatten(2)  # (n, R, W * embedding)
        present = (torch.arange(tokens.shape[1]) < rows[:, None]).to(row_vectors.dtype)
        mean = (row_vectors * present[..., None]).sum(1) / rows[:, None].to(row_vectors.dtype)
        return self.layers(mean).squeeze(1)


class SurrogateEnsemble:
    """An ensemble of LSTM or MLP accuracy predictors.

    Parameters
    ----------
    kind : {"lstm", "mlp"}
        The predictor.
    vocabulary_size : int
        Tokens are ``0 .. vocabulary_size - 1``.
    width : int
        Tokens per row (4 for PNAS blocks).
    members : int
        Networks in the ensemble.
    embedding_size, hidden_size : int
        Sizes of the token embedding and of the hidden layers (or LSTM state).
    steps : int
        Adam steps per member and fit, on mini-batches of ``batch_size`` cells.
    learning_rate, weight_decay : float
        Adam's settings.
    seed : int
        Seeds every fit (with :meth:`fit`'s ``seed`` added): equal seeds, equal models.
    """

    def __init__(
        self,
        kind: str,
        vocabulary_size: int,
        width: int,
        members: int = 5,
        embedding_size: int = 32,
        hidden_size: int = 64,
        steps: int = 300,
        batch_size: int = 64,
        learning_rate: float = 0.01,
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown surrogate {kind!r}; known surrogates: {', '.join(KINDS)}")
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("width", width),
            ("members", members),
            ("steps", steps),
            ("batch_size", batch_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.kind, self.vocabulary_size, self.width = kind, vocabulary_size, width
        self.ensemble_size, self.embedding_size, self.hidden_size = (
            members,
            embedding_size,
            hidden_size,
        )
        self.steps, self.batch_size = steps, batch_size
        self.learning_rate, self.weight_decay, self.seed = learning_rate, weight_decay, seed
        self.members: list[nn.Module] = []
        # accuracies are standardised for training: (target - mean) / scale
        self.target_mean, self.target_scale = 0.0, 1.0

    def _new_member(self) -> nn.Module:
        if self.kind == "lstm":
            return LSTMPredictor(
                self.vocabulary_size, self.embedding_size, self.hidden_size, self.width
            )
        return MLPPredictor(self.vocabulary_size, self.embedding_size, self.hidden_size, self.width)

    @property
    def fitted(self) -> bool:
        return bool(self.members)

    def fit(self, cells: Sequence[TokenRows], targets: Sequence[float], seed: int = 0) -> None:
        """Train new members on ``cells`` (token rows) and their ``targets`` (accuracies).

        With at least ``members`` cells, member ``m`` leaves out fold ``m`` of a random
        partition (so members differ and their spread means something); with fewer,
        every member sees every cell and only the initialisation differs. An ensemble of
        one sees every cell.
        """
        tokens, rows = pad_cells(cells)
        values = torch.as_tensor(np.asarray(targets, dtype=np.float64), dtype=torch.float32)
        if values.shape != (len(cells),):
            raise ValueError(f"{len(cells)} cells but {values.numel()} targets")
        self._check_tokens(tokens)
        self.target_mean = float(values.mean())
        self.target_scale = float(values.std()) if len(values) > 1 else 1.0
        self.target_scale = self.target_scale if self.target_scale > 0 else 1.0
        standardised = (values - self.target_mean) / self.target_scale
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + seed)
        folds = torch.randperm(len(cells), generator=generator) % self.ensemble_size
        self.members = []
        for member in range(self.ensemble_size):
            chosen = torch.nonzero(folds != member).squeeze(1)
            if len(cells) < self.ensemble_size or self.ensemble_size == 1:
                chosen = torch.arange(len(cells))  # no fold to leave out
            # a private copy of the global generator: fitting must not move the caller's
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                network = self._new_member()
            self._train(network, tokens[chosen], rows[chosen], standardised[chosen], generator)
            self.members.append(network.eval())

    def _train(
        self,
        network: nn.Module,
        tokens: Tensor,
        rows: Tensor,
        targets: Tensor,
        generator: torch.Generator,
    ) -> None:
        optimizer = torch.optim.Adam(
            network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        network.train()
        batch = min(self.batch_size, len(targets))
        for _ in range(self.steps):
            indices = torch.randperm(len(targets), generator=generator)[:batch]
            loss = nn.functional.mse_loss(network(tokens[indices], rows[indices]), targets[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.shape[2] != self.width:
            raise ValueError(f"rows have {tokens.shape[2]} tokens, expected {self.width}")
        if int(tokens.max()) > self.vocabulary_size or int(tokens.min()) < PADDING:
            raise ValueError(f"tokens must be in 0..{self.vocabulary_size - 1}")

    @torch.no_grad()
    def predict(self, cells: Sequence[TokenRows]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted accuracy of each cell.

        Returns
        -------
        mean, spread : np.ndarray
            (n,) float64: the members' mean prediction, and their standard deviation
            (0 for an ensemble of one), in the targets' units.
        """
        if not self.fitted:
            raise RuntimeError("predict() before fit()")
        tokens, rows = pad_cells(cells)
        self._check_tokens(tokens)
        predictions = (
            torch.stack(
                [
                    torch.cat(
                        [
                            member(
                                tokens[start : start + PREDICTION_BATCH],
                                rows[start : start + PREDICTION_BATCH],
                            )
                            for start in range(0, len(cells), PREDICTION_BATCH)
                        ]
                    )
                    for member in self.members
                ]
            ).double()
            * self.target_scale
            + self.target_mean
        )  # (members, n)
        spread = predictions.std(0) if len(self.members) > 1 else torch.zeros(len(cells))
        return predictions.mean(0).numpy(), spread.double().numpy()

    def state_dict(self) -> dict[str, Any]:
        """The fitted members' weights and the target scaling (picklable)."""
        return {
            "members": [member.state_dict() for member in self.members],
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (with the same constructor options)."""
        self.members = []
        for weights in state["members"]:
            member = self._new_member()
            member.load_state_dict(weights)
            self.members.append(member.eval())
        self.target_mean, self.target_scale = state["target_mean"], state["target_scale"]
