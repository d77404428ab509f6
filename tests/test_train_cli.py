"""``pynas train FILE.json``: retraining a genotype, saving, ONNX export, usage errors."""

from __future__ import annotations

import json

import pytest
import torch
from test_darts import DARTS_V2

from pynas import cli
from pynas.spaces.darts import DartsNetwork
from pynas.train_cli import cutout

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--channels", "4", "--layers", "3", "--epochs", "2", "--batch-size", "32"]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """Make ``train`` a subcommand of ``pynas`` (whether or not the CLI has it yet)."""
    monkeypatch.setitem(cli.SUBCOMMANDS, "train", ("pynas.train_cli", "retrain a genotype"))


def test_train_a_genotype_with_the_paper_extras_and_export_onnx(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    genotype_file = tmp_path / "genotype.json"
    genotype_file.write_text(json.dumps(DARTS_V2))
    out, exported = tmp_path / "out", tmp_path / "model.onnx"
    status = cli.main([
        "train", str(genotype_file), *TINY, "--auxiliary-weight", "0.4", "--drop-path", "0.2",
        "--cutout", "4", "--out", str(out), "--export", str(exported),
    ])  # fmt: skip
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_acc"] > 30.0  # ten classes: chance is 10%
    assert f"test accuracy {metrics['test_acc']:.2f}%" in capsys.readouterr().out
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]

    model = DartsNetwork(DARTS_V2, 10, 1, channels=4, layers=3, auxiliary=True)
    model.load_state_dict(torch.load(out / "model.pt"))
    model.eval()
    images = torch.randn(3, 1, 8, 8)
    onnx.checker.check_model(onnx.load(str(exported)))
    (onnx_logits,) = ReferenceEvaluator(str(exported)).run(None, {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_logits), model(images), atol=1e-4, rtol=1e-4)


def test_train_reads_the_genotype_of_a_search_result(tmp_path):
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"strategy": "darts", "genotype": DARTS_V2, "val_acc": 1.0}))
    out = tmp_path / "out"
    argv = ["train", str(result), *TINY, "--limit-train", "64", "--out", str(out)]
    argv[argv.index("--epochs") + 1] = "1"
    assert cli.main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["genotype"] == DARTS_V2


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "cannot read"),
        ("{not json", "holds no usable DARTS genotype"),
        (json.dumps({"best": {"arch": "|nor_conv_3x3~0|"}}), "holds no usable DARTS genotype"),
        (json.dumps({**DARTS_V2, "reduce": DARTS_V2["reduce"][:4]}), "must list 8"),
    ],
)
def test_bad_files_are_one_line_with_status_2(tmp_path, capsys, content, message):
    path = tmp_path / "genotype.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


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
