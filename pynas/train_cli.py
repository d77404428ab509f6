"""``pynas train RUN``: retrain a search's best architecture from scratch, test and export it.

RUN is a run directory, its ``result.json``, or a bare DARTS genotype (``normal``,
``normal_concat``, ``reduce``, ``reduce_concat``). The architecture trains on the run's
own data and split unless the data options say otherwise; the darts space trains as the
paper's evaluation (its extras are options), every other space as a search evaluates it,
for longer. ``--out DIR`` receives ``model.pt``, ``architecture.json`` and
``metrics.json``; ``--export`` also writes ONNX and TorchScript that run without pynas.
The Python API is :func:`pynas.retrain.train` (``pynas.train``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from pynas.data import CLASSIFICATION, TASKS
from pynas.retrain import (
    DARTS_DEFAULTS,
    DARTS_OPTIONS,
    DEFAULTS,
    TrainedModel,
    export_paths,
    train,
)
from pynas.search.cli import _image_size, _names  # the data options parse as in search
from pynas.threads import plan_threads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pynas train``."""
    parser.add_argument(
        "run",
        metavar="RUN",
        help="a run directory (pynas search --out), its result.json, or a DARTS genotype "
        "(.json)",
    )
    data = parser.add_argument_group(
        "data", "default: the run's own data and split (a DARTS genotype: digits); --dataset "
        "describes other data afresh, the other options change the run's"
    )
    data.add_argument("--dataset", metavar="NAME|PATH", help="a built-in dataset or your data")
    data.add_argument("--data-dir", help="where a built-in dataset's files are")
    data.add_argument("--target", type=_names, metavar="COLUMN[,COLUMN...]",
                      help="the CSV column(s) to predict")
    data.add_argument("--task", choices=TASKS)
    data.add_argument("--image-size", type=_image_size, metavar="HxW",
                      help="resize a folder's images to this")
    data.add_argument("--valid-fraction", type=float,
                      help="share of your data held out for validation")
    data.add_argument("--test-fraction", type=float, help="share held out for testing")
    data.add_argument("--split-seed", type=int, help="fixes the held-out examples")
    data.add_argument("--limit-train", type=int, metavar="N",
                      help="train on a fixed subset of N examples; 0: the whole training split "
                      "(default: the run's)")
    training = parser.add_argument_group(
        "training", "defaults: darts space / other spaces"
    )
    training.add_argument(
        "--epochs", type=int,
        help=f"(default: {DARTS_DEFAULTS['epochs']} / {DEFAULTS['epochs']})",
    )
    training.add_argument(
        "--batch-size", type=int,
        help=f"(default: {DARTS_DEFAULTS['batch_size']} / {DEFAULTS['batch_size']})",
    )
    training.add_argument(
        "--lr", type=float,
        help="initial learning rate, cosine-annealed to 0 (default: "
        f"{DARTS_DEFAULTS['lr']['sgd']} / {DEFAULTS['lr']['sgd']} with SGD, "
        f"{DEFAULTS['lr']['adam']} with Adam)",
    )
    training.add_argument(
        "--optimizer", choices=("sgd", "adam"), default="sgd",
        help="SGD has momentum 0.9 (default: %(default)s)",
    )
    training.add_argument(
        "--weight-decay", type=float,
        help=f"(default: {DARTS_DEFAULTS['weight_decay']} / {DEFAULTS['weight_decay']})",
    )
    training.add_argument(
        "--last-epoch",
        action="store_true",
        help="keep the last epoch's weights (default: the epoch of best validation score)",
    )
    training.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    training.add_argument("--device", default="cpu", help="(default: %(default)s)")
    training.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads (default: $PYNAS_THREADS, $OMP_NUM_THREADS, or the cores free when "
             "it starts)")
    darts = parser.add_argument_group("darts space", "the paper's evaluation network and extras")
    darts.add_argument(
        "--channels", type=int,
        help=f"initial channels C (default: {DARTS_OPTIONS['channels']}; paper: 36)",
    )
    darts.add_argument(
        "--layers", type=int, help=f"cells (default: {DARTS_OPTIONS['layers']}; paper: 20)"
    )
    darts.add_argument(
        "--auxiliary-weight", type=float,
        help="weight of the auxiliary head's loss; 0 builds no head "
        f"(default: {DARTS_OPTIONS['auxiliary_weight']}; paper: 0.4)",
    )
    darts.add_argument(
        "--drop-path", type=float,
        help="final drop-path probability, raised linearly over the epochs "
        f"(default: {DARTS_OPTIONS['drop_path']}; paper: 0.2)",
    )
    darts.add_argument(
        "--cutout", type=int, metavar="PIXELS",
        help="side of the cutout square; 0: none "
        f"(default: {DARTS_OPTIONS['cutout']}; paper: 16 on 32x32 images)",
    )
    darts.add_argument(
        "--grad-clip", type=float,
        help=f"gradient norm clip (default: {DARTS_OPTIONS['grad_clip']})",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", metavar="DIR",
        help="where to save model.pt, architecture.json and metrics.json (default: RUN/train "
        "for a run directory, else runs/train-TIMESTAMP)",
    )
    output.add_argument(
        "--export", metavar="DIR|FILE.onnx",
        help="also write ONNX and TorchScript: DIR/model.onnx and DIR/model.ts, or FILE.onnx "
        "and FILE.ts (need the onnx package; they run without pynas)",
    )


def default_out(run: str) -> Path:
    """``RUN/train`` for a run directory, else ``runs/train-TIMESTAMP``."""
    if Path(run).is_dir():
        return Path(run) / "train"
    return Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"


def summary_line(trained: TrainedModel) -> str:
    """The test score(s), then the validation score, size, epochs and where files went."""
    metrics = trained.metrics
    if trained.architecture["task"] == CLASSIFICATION:
        scores = f"test accuracy {metrics['test_acc']:.2f}% (val {metrics['val_acc']:.2f}%"
    else:
        scores = (f"test R² {metrics['test_r2']:.4f}, RMSE {metrics['test_rmse']:.4g}, "
                  f"MAE {metrics['test_mae']:.4g} (val R² {metrics['val_r2']:.4f}")
    epochs = metrics["epochs"]
    return (f"{scores}, {metrics['params']:,} parameters, {epochs} epoch"
            f"{'' if epochs == 1 else 's'} in {metrics['seconds']:.0f} s); saved in {trained.out}")


def run(args: argparse.Namespace) -> int:
    """``pynas train``: train, test, save, optionally export; prints the test score."""
    plan = plan_threads(args.threads)
    torch.set_num_threads(plan.per_process)
    trained = train(
        args.run,
        args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        data_dir=args.data_dir,
        target=args.target,
        task=args.task,
        image_size=args.image_size,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        limit_train=args.limit_train,
        channels=args.channels,
        layers=args.layers,
        auxiliary_weight=args.auxiliary_weight,
        drop_path=args.drop_path,
        cutout=args.cutout,
        grad_clip=args.grad_clip,
        out=args.out or default_out(args.run),
        export=args.export,
        keep_best_epoch=not args.last_epoch,
        progress=sys.stderr.isatty(),
    )
    line = summary_line(trained)
    if args.export:
        line += "; exported " + ", ".join(str(path) for path in export_paths(args.export))
    print(line)
    if plan.note() is not None:  # after the training's checks, so an error stays one line
        print(f"pynas: {plan.note()}", file=sys.stderr)
    return 0
