"""``pynas train RUN`` and ``pynas.retrain.train``: retraining the best architecture of a
run (darts genotypes, an nb201 run on digits, an mlp run on a regression table), the
saved files, the export that runs without pynas, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_darts import DARTS_V2

from pynas import cli
from pynas.data import DataSpec, load_dataset
from pynas.retrain import cutout, load_model, train
from pynas.spaces import SPACES, NB201Space

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--channels", "4", "--layers", "3", "--epochs", "2", "--batch-size", "32"]
NB201_ARCH = (
    "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
)
MLP_ARCH = "32-relu-0.0 | 0 | 0 | 16-tanh-0.0<0"

# Runs in a fresh interpreter where pynas cannot be imported (None in sys.modules makes
# `import pynas` raise ImportError whether or not it is installed), loads both exported
# files and saves what they compute on the inputs. argv: inputs.npz, model.ts, model.onnx,
# outputs.npz
WITHOUT_PYNAS = r"""
import sys
sys.modules["pynas"] = None
try:
    import pynas
except ImportError:
    pass
else:
    raise SystemExit("pynas is importable")
import numpy as np
import torch

inputs = np.load(sys.argv[1])["inputs"]
outputs = {"torchscript": torch.jit.load(sys.argv[2])(torch.from_numpy(inputs)).detach().numpy()}
try:
    import onnxruntime
except ImportError:  # the onnx package's own evaluator runs the model too, more slowly
    import onnx
    from onnx.reference import ReferenceEvaluator

    graph = onnx.load(sys.argv[3])
    onnx.checker.check_model(graph)
    feeds = {graph.graph.input[0].name: inputs}
    outputs["onnx"] = ReferenceEvaluator(sys.argv[3]).run(None, feeds)[0]
else:
    session = onnxruntime.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"])
    outputs["onnx"] = session.run(None, {session.get_inputs()[0].name: inputs})[0]
np.savez(sys.argv[4], **outputs)
"""


def check_export_without_pynas(model, torchscript, onnx_file, inputs, tmp_path):
    """The exported files, run where pynas cannot be imported, match ``model``."""
    inputs = inputs.float().numpy()
    np.savez(tmp_path / "inputs.npz", inputs=inputs)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    child = subprocess.run(
        [sys.executable, "-I", "-c", WITHOUT_PYNAS, str(tmp_path / "inputs.npz"),
         str(torchscript), str(onnx_file), str(tmp_path / "outputs.npz")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    with torch.no_grad():
        expected = model.cpu().eval()(torch.from_numpy(inputs))
    outputs = np.load(tmp_path / "outputs.npz")
    assert set(outputs.files) == {"torchscript", "onnx"}
    for name in outputs.files:
        torch.testing.assert_close(torch.from_numpy(outputs[name]), expected, rtol=1e-4,
                                   atol=1e-4, msg=name)


def write_run(directory, space, genotype, config, result_extra=None):
    """A finished search as the shared loop writes it (config.json, result.json)."""
    arch = SPACES[space]().from_genotype(genotype)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    result = {
        "strategy": config["strategy"], "space": space, "evaluations": 1, "failed": 0,
        "score_name": "val_acc",
        "best": {"trial": 0, "arch": SPACES[space]().to_string(arch), "genotype": genotype,
                 "score": 50.0, "metrics": {"score": 50.0}},
        "config": config, **(result_extra or {}),
    }  # fmt: skip
    (directory / "result.json").write_text(json.dumps(result))
    return result


def digits_config(**changes):
    """config.json of ``pynas search random --space nb201 --limit-train 64``."""
    return {
        "strategy": "random", "space": "nb201", "dataset": None, "data_dir": None,
        "target": None, "task": None, "image_size": None, "valid_fraction": 0.2,
        "test_fraction": 0.2, "split_seed": 0, "limit_train": 64, "seed": 0, "epochs": 1,
        "benchmark": None, **changes,
    }  # fmt: skip


DIGITS_DESCRIPTION = {"evaluator": {"evaluator": "TrainEvaluator", "data": {"name": "digits"}}}


@pytest.fixture
def nb201_run(tmp_path):
    run = tmp_path / "run"
    space = NB201Space()
    genotype = space.to_genotype(space.from_string(NB201_ARCH))
    write_run(run, "nb201", genotype, digits_config(), DIGITS_DESCRIPTION)
    return run


@pytest.fixture
def table(tmp_path):
    """A CSV regression table: y depends linearly on x1, x2 (x3 is noise)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 1] + 10.0 + 0.1 * rng.normal(size=300)
    path = tmp_path / "table.csv"
    lines = ["x1,x2,x3,y"] + [",".join(f"{v:.6f}" for v in (*row, t)) for row, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_darts_genotype_trains_with_the_paper_extras_and_exports(tmp_path, capsys):
    genotype_file = tmp_path / "genotype.json"
    genotype_file.write_text(json.dumps(DARTS_V2))
    out, exported = tmp_path / "out", tmp_path / "exported" / "net.onnx"
    status = cli.main([
        "train", str(genotype_file), *TINY, "--auxiliary-weight", "0.4", "--drop-path", "0.2",
        "--cutout", "4", "--out", str(out), "--export", str(exported),
    ])  # fmt: skip
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_acc"] > 30.0  # ten classes: chance is 10%
    printed = capsys.readouterr().out
    assert f"test accuracy {metrics['test_acc']:.2f}%" in printed and str(out) in printed
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    assert {"train_loss", "train_acc", "val_acc"} <= set(metrics["history"][0])
    assert metrics["options"]["auxiliary_weight"] == 0.4 and metrics["options"]["lr"] == 0.025
    architecture = json.loads((out / "architecture.json").read_text())
    assert architecture["genotype"] == DARTS_V2 and architecture["input_shape"] == [1, 8, 8]
    assert architecture["network"] == {"channels": 4, "layers": 3}

    model = load_model(out)  # without the auxiliary head, which only serves training
    assert not any("auxiliary" in name for name in model.state_dict())
    assert {path.name for path in exported.parent.iterdir()} == {"net.onnx", "net.ts"}
    import onnx
    from onnx.reference import ReferenceEvaluator

    onnx.checker.check_model(onnx.load(str(exported)))
    images = load_dataset("digits").test.inputs[:3]
    (onnx_logits,) = ReferenceEvaluator(str(exported)).run(None, {"images": images.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_logits), model(images), atol=1e-4,
                                   rtol=1e-4)


def test_the_genotype_of_a_darts_result_is_read(tmp_path):
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"strategy": "darts", "genotype": DARTS_V2, "val_acc": 1.0}))
    out = tmp_path / "out"
    argv = ["train", str(result), *TINY, "--limit-train", "64", "--out", str(out)]
    argv[argv.index("--epochs") + 1] = "1"
    assert cli.main(argv) == 0
    assert json.loads((out / "architecture.json").read_text())["genotype"] == DARTS_V2
    assert json.loads((out / "metrics.json").read_text())["data"]["sizes"]["train"] == 64


def test_an_nb201_run_retrains_on_its_own_data_and_exports(nb201_run, tmp_path, capsys):
    status = cli.main(["train", str(nb201_run), "--epochs", "2", "--batch-size", "32",
                       "--optimizer", "adam", "--export", str(tmp_path / "exported")])
    assert status == 0
    out = nb201_run / "train"  # the default for a run directory
    assert {"model.pt", "architecture.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val_acc", "test_acc", "params", "seconds", "history", "options"} <= set(metrics)
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    assert metrics["data"]["sizes"]["train"] == 64  # the run's --limit-train
    assert metrics["options"]["lr"] == 1e-3  # Adam's default
    architecture = json.loads((out / "architecture.json").read_text())
    assert architecture == {
        "space": "nb201", "arch": NB201_ARCH, "genotype": {"space": "nb201", "arch": NB201_ARCH},
        "input_shape": [1, 8, 8], "num_outputs": 10, "task": "classification",
        "output_names": [str(digit) for digit in range(10)],
    }  # fmt: skip
    printed = capsys.readouterr().out
    assert f"test accuracy {metrics['test_acc']:.2f}%" in printed
    assert "model.onnx" in printed and "model.ts" in printed

    model = load_model(out)
    images = load_dataset("digits").test.inputs[:5]
    check_export_without_pynas(model, tmp_path / "exported" / "model.ts",
                               tmp_path / "exported" / "model.onnx", images, tmp_path)


@pytest.mark.skipif("mlp" not in SPACES, reason="the mlp space (feature vectors) is absent")
def test_an_mlp_regression_run_retrains_from_python_and_exports(table, tmp_path):
    spec = DataSpec(str(table), target=("y",), limit_train=150)
    space = SPACES["mlp"]()
    genotype = space.to_genotype(space.from_string(MLP_ARCH))
    evaluator = {"evaluator": "TrainEvaluator", **spec.to_dict(),
                 "data": {"name": str(table), "task": "regression"}}
    result = {"strategy": "evolution", "space": "mlp", "score_name": "val_r2",
              "best": {"arch": MLP_ARCH, "genotype": genotype, "score": 0.5},
              "evaluator": evaluator}  # fmt: skip
    trained = train(result, epochs=2, lr=0.01, out=tmp_path / "out",
                    export=tmp_path / "exported")
    assert trained.out == tmp_path / "out"
    for key in ("val_r2", "val_rmse", "val_mae", "test_r2", "test_rmse", "test_mae"):
        assert np.isfinite(trained.metrics[key])
    assert trained.metrics["data"]["sizes"]["train"] == 150
    assert set(trained.metrics["history"][0]) == {"epoch", "train_loss", "val_r2", "val_rmse",
                                                  "val_mae"}
    assert trained.architecture["output_names"] == ["y"]
    assert trained.architecture["input_shape"] == [3]

    data = spec.load()
    # predictions come out in the target's units (about 10), not standardised
    with torch.no_grad():
        predictions = trained.model.eval()(data.test.inputs)
    assert predictions.shape == (len(data.test), 1) and 5 < float(predictions.mean()) < 15
    with torch.no_grad():
        reloaded = load_model(tmp_path / "out")(data.test.inputs)
    torch.testing.assert_close(reloaded, predictions)
    check_export_without_pynas(trained.model, tmp_path / "exported" / "model.ts",
                               tmp_path / "exported" / "model.onnx", data.test.inputs[:7],
                               tmp_path)

    # data given loaded: used as it is
    again = train(result, data, epochs=1)
    assert again.out is None and again.metrics["data"]["sizes"]["train"] == 150


def test_a_run_on_arrays_needs_its_data_again(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, "nb201", {"space": "nb201", "arch": NB201_ARCH},
              digits_config(limit_train=None), {"data": {"name": "arrays"}})
    assert cli.main(["train", str(run)]) == 2
    error = capsys.readouterr().err
    assert "pass --dataset" in error and len(error.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="data="):
        train(run)
    trained = train(run, "digits", epochs=1, limit_train=32)
    assert trained.metrics["data"]["sizes"]["train"] == 32


BAD_OPTIONS = [
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--batch-size", "1"], "batch_size must be an integer of at least 2"),
    (["--lr", "-1"], "lr must be positive"),
    (["--cutout", "4"], "cutout: for the darts space only"),
    (["--device", "tpu:x"], "unknown --device"),
    (["--optimizer", "lbfgs"], "invalid choice"),
]


@pytest.mark.parametrize("options,message", BAD_OPTIONS)
def test_bad_options_are_one_line_with_status_2(nb201_run, capsys, options, message):
    assert cli.main(["train", str(nb201_run), *options]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (nb201_run / "train").exists()


NB201_BAD = {"space": "nb201", "arch": "|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"}
# case -> (files written into tmp_path/run, the path given, what the error says)
BAD_RUNS = {
    "missing": ({}, "missing", "cannot read"),
    "no result": ({}, "run", "no result.json"),
    "not json": ({"result.json": "{not json"}, "run", "is not JSON"),
    "all failed": ({"result.json": {"space": "nb201", "best": None, "failed": 3}}, "run",
                   "no finished architecture (3 evaluations failed)"),
    "no space": ({"result.json": {"best": {"arch": "|nor_conv_3x3~0|"}}}, "run",
                 "holds neither a search result"),
    "bad nb201": ({"result.json": {"space": "nb201", "best": {"genotype": NB201_BAD}}}, "run",
                  "holds no usable nb201 architecture"),
    "bad darts": ({"genotype.json": {**DARTS_V2, "reduce": DARTS_V2["reduce"][:4]}},
                  "run/genotype.json", "must list 8"),
    "unknown space": ({"result.json": {"space": "nope", "best": {"arch": "x"}}}, "run",
                      "unknown search space"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_runs_are_one_line_with_status_2(tmp_path, capsys, case):
    files, given, message = BAD_RUNS[case]
    (tmp_path / "run").mkdir()
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / "run" / name).write_text(text)
    path = tmp_path / given
    assert cli.main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    with pytest.raises(ValueError, match=re.escape(message)):
        train(path)
    assert not (tmp_path / "out").exists()


def test_a_space_that_cannot_take_the_data_is_refused(nb201_run, table, capsys):
    argv = ["train", str(nb201_run), "--dataset", str(table), "--target", "y"]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "builds networks for images" in error and len(error.strip().splitlines()) == 1


def test_cutout_zeroes_one_square_clipped_at_the_border():
    generator = torch.Generator().manual_seed(0)
    images = torch.ones(200, 2, 8, 8)
    cut = cutout(images, 4, generator)
    zeroed = (cut == 0).all(dim=1)  # both channels cut alike
    assert torch.equal((cut == 0).any(dim=1), zeroed)
    counts = zeroed.flatten(1).sum(dim=1)
    assert counts.max() == 16 and counts.min() >= 4  # a full 4x4 square, or a clipped corner
    for mask in zeroed[:20]:
        rows, columns = mask.nonzero(as_tuple=True)
        height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
        assert height * width == mask.sum()  # a rectangle, no holes
