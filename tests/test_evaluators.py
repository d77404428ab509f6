"""Evaluators: training on a dataset, the benchmark table, and the NATS-Bench API."""
import csv
import pickle
import sys
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from pynas.errors import UsageError
from pynas.evaluate import NATSEvaluator, TableEvaluator, TrainEvaluator, read_table
from pynas.evaluate import table as table_module
from pynas.spaces import NB201Space

NB201_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201.csv"
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


@pytest.fixture
def nb201_csv() -> Path:
    if not NB201_CSV.is_file():
        pytest.skip(f"{NB201_CSV} is absent")
    return NB201_CSV


def csv_row(path: Path, arch: str) -> dict[str, str]:
    with open(path, newline="") as stream:
        return next(row for row in csv.DictReader(stream) if row["arch"] == arch)


# ------------------------------------------------------------------------ table


def test_table_returns_the_row_of_the_architecture(nb201_csv):
    space = NB201Space()
    evaluator = TableEvaluator(nb201_csv, "cifar10_valid", cost_column="train_seconds_200ep")
    arch = space.from_string(RESNET_CELL)
    result = evaluator.evaluate(space, arch)
    row = csv_row(nb201_csv, RESNET_CELL)
    assert result["val_acc"] == float(row["cifar10_valid"])
    assert result["test_acc"] == float(row["cifar10_test"])
    assert result["seconds"] == float(row["train_seconds_200ep"])
    numeric = [name for name in row if name not in ("arch", "unique")]
    for name in numeric:
        assert result[name] == float(row[name])
    assert "unique" not in result and "arch" not in result
    assert int(result["index"]) == 11472  # SOURCE.md: the ResNet-like cell's NATS index


def test_table_knows_the_best_cell(nb201_csv):
    # SOURCE.md: the best validation accuracy is index 6111 (91.6067; 94.3733 on test).
    space = NB201Space()
    evaluator = TableEvaluator(nb201_csv, "cifar10_valid")
    table = read_table(nb201_csv)
    best = max(table.rows, key=lambda arch: table.row(arch)["cifar10_valid"])
    result = evaluator.evaluate(space, space.from_string(best))
    assert int(result["index"]) == 6111
    assert result["val_acc"] == pytest.approx(91.6067)
    assert result["test_acc"] == pytest.approx(94.3733)
    assert result["seconds"] == 0.0


def test_table_test_accuracy_mapping(nb201_csv):
    space = NB201Space()
    arch = space.from_string(RESNET_CELL)
    row = csv_row(nb201_csv, RESNET_CELL)
    on_test_column = TableEvaluator(nb201_csv, "cifar100_test").evaluate(space, arch)
    assert on_test_column["val_acc"] == float(row["cifar100_test"])
    assert "test_acc" not in on_test_column
    low_fidelity = TableEvaluator(nb201_csv, "cifar10_test_12ep", val_column="cifar10_valid")
    result = low_fidelity.evaluate(space, arch)
    assert result["val_acc"] == float(row["cifar10_test_12ep"])
    assert result["test_acc"] == float(row["cifar10_test"])


def test_table_loads_fast_once_per_process(nb201_csv, monkeypatch):
    monkeypatch.setattr(table_module, "_TABLE_CACHE", {})
    started = time.process_time()  # CPU time: other processes on the machine do not count
    table = read_table(nb201_csv)
    assert time.process_time() - started < 1.0
    assert len(table.rows) == 15_625
    assert read_table(nb201_csv) is table
    evaluator = TableEvaluator(nb201_csv, "cifar10_valid")
    assert len(pickle.dumps(evaluator)) < 1000  # the table is not pickled with it


def write_small_table(path: Path) -> NB201Space:
    space = NB201Space()
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["arch", "toy_valid", "toy_test", "cost", "note"])
        writer.writerow([space.to_string((1,) * 6), "50.5", "49.5", "12.0", "a"])
        writer.writerow([space.to_string((3,) * 6), "70.25", "69.0", "30.5", "b"])
    return space


def test_small_table_and_its_errors(tmp_path):
    path = tmp_path / "toy.csv"
    space = write_small_table(path)
    evaluator = TableEvaluator(path, "toy_valid", cost_column="cost")
    assert evaluator.evaluate(space, (3,) * 6) == {
        "toy_valid": 70.25,
        "toy_test": 69.0,
        "cost": 30.5,
        "score": 70.25,
        "val_acc": 70.25,
        "test_acc": 69.0,
        "seconds": 30.5,
    }
    restored = pickle.loads(pickle.dumps(evaluator))
    assert restored.evaluate(space, (1,) * 6)["val_acc"] == 50.5
    with pytest.raises(UsageError, match=r"\|none~0\|"):
        evaluator.evaluate(space, (0,) * 6)
    with pytest.raises(UsageError, match="'accuracy'.*toy_valid, toy_test, cost"):
        TableEvaluator(path, "accuracy")
    with pytest.raises(UsageError, match="'note'"):
        TableEvaluator(path, "toy_valid", cost_column="note")
    with pytest.raises(UsageError, match="missing.csv"):
        TableEvaluator(tmp_path / "missing.csv", "toy_valid")
    no_arch = tmp_path / "no_arch.csv"
    no_arch.write_text("name,toy_valid\nx,1\n")
    with pytest.raises(UsageError, match="'arch' column"):
        TableEvaluator(no_arch, "toy_valid")


def test_table_is_read_again_when_the_file_changes(tmp_path):
    path = tmp_path / "toy.csv"
    space = write_small_table(path)
    assert TableEvaluator(path, "toy_valid").evaluate(space, (1,) * 6)["val_acc"] == 50.5
    path.write_text(path.read_text().replace("50.5", "55.5") + "\n")
    assert TableEvaluator(path, "toy_valid").evaluate(space, (1,) * 6)["val_acc"] == 55.5


# ------------------------------------------------------------------------ training

TINY = NB201Space(channels=4, cells_per_stage=1)
TINY_RESNET = TINY.from_string(RESNET_CELL)


def test_training_on_digits_beats_chance_and_is_deterministic():
    evaluator = TrainEvaluator("digits", epochs=1, seed=0)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = evaluator.evaluate(TINY, TINY_RESNET)
    # The caller's random stream and thread count are left as they were.
    assert torch.equal(torch.rand(3), expected_draw)
    assert torch.get_num_threads() == threads
    second = pickle.loads(pickle.dumps(evaluator)).evaluate(TINY, TINY_RESNET)
    assert first["val_acc"] > 20.0
    assert first["test_acc"] > 20.0
    assert first["params"] == TINY.count_parameters(TINY_RESNET, (1, 8, 8), 10)
    assert first["seconds"] > 0
    del first["seconds"], second["seconds"]
    assert first == second


def test_training_options_change_the_run():
    # 100 images and 2 epochs keep this fast; each option must reach the training.
    base = {"dataset": "digits", "epochs": 2, "limit_train": 100}
    runs = {
        "sgd": TrainEvaluator(**base).evaluate(TINY, TINY_RESNET),
        "adam": TrainEvaluator(**base, optimizer="adam").evaluate(TINY, TINY_RESNET),
        "constant": TrainEvaluator(**base, schedule="constant").evaluate(TINY, TINY_RESNET),
        "seed": TrainEvaluator(**base, seed=1).evaluate(TINY, TINY_RESNET),
    }
    losses = {name: result["train_loss"] for name, result in runs.items()}
    assert len(set(losses.values())) == 4, losses
    for result in runs.values():
        assert set(result) == {"score", "val_acc", "test_acc", "train_loss", "seconds", "params"}
        assert result["score"] == result["val_acc"]
        assert 0 <= result["val_acc"] <= 100


def test_train_evaluator_pickles_small_and_describes_itself():
    evaluator = TrainEvaluator("digits", epochs=3, lr=0.02, limit_train=50)
    evaluator.evaluate(TINY, TINY_RESNET)  # loads the dataset into this process
    assert len(pickle.dumps(evaluator)) < 1000
    description = evaluator.describe()
    assert description["evaluator"] == "TrainEvaluator"
    assert (description["dataset"], description["epochs"], description["lr"]) == ("digits", 3, 0.02)


@pytest.mark.parametrize(
    "arguments,word",
    [
        ({"dataset": "imagenet"}, "imagenet"),
        ({"optimizer": "rmsprop"}, "rmsprop"),
        ({"schedule": "step"}, "step"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"lr": -0.1}, "lr"),
        ({"momentum": 1.5}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"limit_train": 0}, "limit_train"),
        ({"device": "tpu7"}, "tpu7"),
    ],
)
def test_bad_training_arguments_are_usage_errors(arguments, word):
    with pytest.raises(UsageError, match=word):
        TrainEvaluator(**arguments)


def test_missing_dataset_files_are_reported_before_any_training(tmp_path, monkeypatch):
    def refuse_network(url, timeout=None):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse_network)
    with pytest.raises(UsageError, match="train-images-idx3-ubyte"):
        TrainEvaluator("mnist", data_dir=tmp_path)


# ------------------------------------------------------------------------ NATS-Bench


def test_nats_without_the_package_says_what_to_install():
    try:
        import nats_bench  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("nats_bench is installed here")
    with pytest.raises(UsageError, match="pip install nats_bench"):
        NATSEvaluator()


def test_nats_without_the_benchmark_files_names_the_path(tmp_path, monkeypatch):
    # A stand-in module: the package is there, its benchmark files are not.
    monkeypatch.setitem(sys.modules, "nats_bench", types.ModuleType("nats_bench"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UsageError, match=str(tmp_path / "NATS-tss-v1_0-3ffb9-simple")):
        NATSEvaluator()
    with pytest.raises(UsageError, match="cifar10-valid"):
        NATSEvaluator(dataset="cifar10", path=tmp_path)
