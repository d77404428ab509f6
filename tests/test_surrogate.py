"""The LSTM and MLP surrogate ensembles: padding, learning, spread, determinism, state."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from pynas.search.surrogate import SurrogateEnsemble, pad_cells

VOCABULARY, WIDTH = 12, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_cells(count: int, seed: int) -> tuple[list, np.ndarray]:
    """Cells of 1 to 4 rows whose accuracy is a fixed score per token, averaged over rows
    (an additive ground truth both predictors can represent)."""
    generator = np.random.default_rng(seed)
    token_scores = np.linspace(-1.0, 1.0, VOCABULARY)
    cells, accuracies = [], []
    for _ in range(count):
        cell = generator.integers(0, VOCABULARY, size=(generator.integers(1, 5), WIDTH))
        cells.append(cell.tolist())
        accuracies.append(90 + 2 * token_scores[cell].sum(1).mean())
    return cells, np.asarray(accuracies)


def test_pad_cells_shifts_tokens_and_pads_with_zero():
    tokens, rows = pad_cells([[[0, 1, 2]], [[3, 4, 5], [6, 7, 8]]])
    assert rows.tolist() == [1, 2]
    assert tokens.tolist() == [[[1, 2, 3], [0, 0, 0]], [[4, 5, 6], [7, 8, 9]]]
    with pytest.raises(ValueError, match="rows of 3 tokens"):
        pad_cells([[[0, 1, 2]], [[0, 1]]])


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_ensemble_ranks_unseen_cells(kind):
    train_cells, train_accuracies = synthetic_cells(160, seed=0)
    test_cells, test_accuracies = synthetic_cells(100, seed=1)
    ensemble = SurrogateEnsemble(kind, VOCABULARY, WIDTH, members=3, steps=200, seed=0)
    ensemble.fit(train_cells, train_accuracies)
    mean, spread = ensemble.predict(test_cells)
    assert mean.shape == spread.shape == (100,)
    assert spearmanr(mean, test_accuracies)[0] > 0.8
    assert abs(mean.mean() - test_accuracies.mean()) < 1.0  # in accuracy units
    assert (spread > 0).all()  # members trained on different folds disagree somewhat


def test_an_ensemble_of_one_learns_from_every_cell_and_has_no_spread():
    train_cells, train_accuracies = synthetic_cells(160, seed=0)
    test_cells, test_accuracies = synthetic_cells(100, seed=1)
    ensemble = SurrogateEnsemble("mlp", VOCABULARY, WIDTH, members=1, steps=200, seed=0)
    ensemble.fit(train_cells, train_accuracies)
    mean, spread = ensemble.predict(test_cells)
    assert spearmanr(mean, test_accuracies)[0] > 0.8
    assert (spread == 0).all()


def test_fit_is_repeatable_and_leaves_the_global_generator_alone():
    cells, accuracies = synthetic_cells(40, seed=2)
    predictions = []
    for _ in range(2):
        torch.manual_seed(123)
        ensemble = SurrogateEnsemble("lstm", VOCABULARY, WIDTH, members=2, steps=30, seed=5)
        ensemble.fit(cells, accuracies, seed=7)
        predictions.append(ensemble.predict(cells)[0])
        after_fit = torch.rand(1)
        torch.manual_seed(123)
        assert torch.equal(after_fit, torch.rand(1))
    np.testing.assert_array_equal(predictions[0], predictions[1])
    other = SurrogateEnsemble("lstm", VOCABULARY, WIDTH, members=2, steps=30, seed=5)
    other.fit(cells, accuracies, seed=8)
    assert not np.array_equal(other.predict(cells)[0], predictions[0])


def test_state_dict_restores_the_same_predictions():
    cells, accuracies = synthetic_cells(30, seed=3)
    ensemble = SurrogateEnsemble("mlp", VOCABULARY, WIDTH, members=2, steps=20)
    ensemble.fit(cells, accuracies)
    restored = SurrogateEnsemble("mlp", VOCABULARY, WIDTH, members=2, steps=20)
    restored.load_state_dict(ensemble.state_dict())
    for got, expected in zip(restored.predict(cells), ensemble.predict(cells)):
        np.testing.assert_array_equal(got, expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown surrogate"):
        SurrogateEnsemble("gru", VOCABULARY, WIDTH)
    ensemble = SurrogateEnsemble("mlp", VOCABULARY, WIDTH)
    with pytest.raises(RuntimeError, match="before fit"):
        ensemble.predict([[[0, 1, 2]]])
    with pytest.raises(ValueError, match="tokens must be in"):
        ensemble.fit([[[0, 1, VOCABULARY]]], [1.0])
    with pytest.raises(ValueError, match="2 cells but 1 targets"):
        ensemble.fit([[[0, 1, 2]], [[0, 1, 2]]], [1.0])
