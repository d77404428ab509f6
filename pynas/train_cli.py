"""``pynas train FILE.json``: retrain a found DARTS architecture from scratch and test it.

FILE is a genotype (``normal``, ``normal_concat``, ``reduce``, ``reduce_concat``) or a
run's ``result.json`` holding one. The network is trained as in the paper's evaluation
(SGD with momentum, cosine learning rate, gradient clipping), with its extras as options:
the auxiliary head (``--auxiliary-weight``), drop-path (``--drop-path``, raised linearly
over the epochs) and cutout (``--cutout``). ``--out DIR`` receives ``model.pt`` (the
trained weights) and ``metrics.json``; ``--export FILE.onnx`` writes the trained network
as ONNX (needs the ``onnx`` package).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as functional
from torch import Tensor
from tqdm import tqdm

from pynas.data import DatasetSplits, load_dataset
from pynas.errors import UsageError
from pynas.runs import atomic_write
from pynas.search.darts import accuracy, epoch_batches, resolve_device
from pynas.spaces.darts import DartsNetwork, DartsSpace, Genotype, load_genotype, steps_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE.json", help="a DARTS genotype, or the result.json of a darts search"
    )
    parser.add_argument("--dataset", default="digits", help="dataset (default: %(default)s)")
    parser.add_argument("--data-dir", help="where the dataset's files are")
    parser.add_argument("--limit-train", type=int, help="use only this many training images")
    parser.add_argument("--epochs", type=int, default=10, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument(
        "--lr",
        type=float,
        default=0.025,
        help="initial SGD learning rate, cosine-annealed to 0 (default: %(default)s)",
    )
    parser.add_argument("--weight-decay", type=float, default=3e-4, help="(default: %(default)s)")
    parser.add_argument(
        "--grad-clip", type=float, default=5.0, help="gradient norm clip (default: %(default)s)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=16,
        help="initial channels C (default: %(default)s; paper: 36)",
    )
    parser.add_argument(
        "--layers", type=int, default=8, help="cells (default: %(default)s; paper: 20)"
    )
    parser.add_argument(
        "--auxiliary-weight",
        type=float,
        default=0.0,
        help="weight of the auxiliary head's loss; 0 builds no head "
        "(default: %(default)s; paper: 0.4)",
    )
    parser.add_argument(
        "--drop-path",
        type=float,
        default=0.0,
        help="final drop-path probability (default: %(default)s; paper: 0.2)",
    )
    parser.add_argument(
        "--cutout",
        type=int,
        default=0,
        metavar="PIXELS",
        help="side of the cutout square; 0: none (default: %(default)s; paper: 16 on 32x32 images)",
    )
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="(default: %(default)s)")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to save model.pt and metrics.json (default: runs/train-TIMESTAMP)",
    )
    parser.add_argument("--export", metavar="FILE.onnx", help="also write the network as ONNX")


def read_genotype(path: str | Path) -> Genotype:
    """The DARTS genotype in ``path`` (a genotype or a result.json), checked."""
    path = Path(path)
    try:
        genotype = load_genotype(path.read_text())
        DartsSpace(steps=steps_of(genotype)).from_genotype(genotype)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, TypeError, KeyError) as error:
        raise UsageError(f"{path} holds no usable DARTS genotype: {error}") from None
    return genotype


def cutout(images: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """Zero one ``length`` x ``length`` square per image (N, C, H, W), centred anywhere in
    the image and clipped at its border (DeVries and Taylor, 2017)."""
    count, _, height, width = images.shape
    centre_y = torch.randint(height, (count, 1, 1), generator=generator)
    centre_x = torch.randint(width, (count, 1, 1), generator=generator)
    # offsets from the square's first row/column: inside when in 0..length-1
    rows = torch.arange(height).view(1, height, 1) - centre_y + length // 2
    columns = torch.arange(width).view(1, 1, width) - centre_x + length // 2
    inside = (rows >= 0) & (rows < length) & (columns >= 0) & (columns < length)
    return images * (~inside).unsqueeze(1).to(images.device, images.dtype)


def train(
    genotype: Genotype, data: DatasetSplits, args: argparse.Namespace, progress: bool = False
) -> tuple[DartsNetwork, dict[str, Any]]:
    """Train the network of ``genotype`` from scratch; returns it and its metrics."""
    if args.epochs < 1 or args.batch_size < 2:
        raise UsageError("--epochs must be at least 1 and --batch-size at least 2")
    if not 0.0 <= args.drop_path < 1.0 or args.auxiliary_weight < 0 or args.cutout < 0:
        raise UsageError("--drop-path must be in [0, 1), --auxiliary-weight and --cutout >= 0")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    model = DartsNetwork(
        genotype,
        data.num_classes,
        data.in_channels,
        channels=args.channels,
        layers=args.layers,
        auxiliary=args.auxiliary_weight > 0,
    ).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    started = time.time()
    for epoch in tqdm(
        range(1, args.epochs + 1), desc="train", disable=not progress, file=sys.stderr
    ):
        # ScheduledDropPath: the probability grows linearly to --drop-path
        model.drop_path_probability = args.drop_path * (epoch - 1) / args.epochs
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for images, labels in epoch_batches(data.train, args.batch_size, args.seed, epoch, device):
            if args.cutout:
                images = cutout(images, args.cutout, generator)
            logits, auxiliary_logits = model.forward_with_auxiliary(images)
            loss = functional.cross_entropy(logits, labels)
            if auxiliary_logits is not None:
                loss = loss + args.auxiliary_weight * functional.cross_entropy(
                    auxiliary_logits, labels
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
        scheduler.step()
        model.drop_path_probability = 0.0
        history.append(
            {
                "epoch": epoch,
                "train_loss": total_loss / seen,
                "train_acc": 100.0 * correct / seen,
                "val_acc": accuracy(model, data.valid, device),
            }
        )
    metrics = {
        "val_acc": history[-1]["val_acc"],
        "test_acc": accuracy(model, data.test, device),
        "params": sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n),
        "seconds": time.time() - started,
        "history": history,
    }
    return model, metrics


def export_onnx(model: DartsNetwork, input_shape: tuple[int, int, int], path: Path) -> None:
    """Write ``model`` (evaluation mode, batch dimension dynamic) as ONNX."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with a clear line first)
    except ImportError:
        raise UsageError("--export needs the onnx package: pip install onnx") from None
    model = model.cpu().eval()
    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings():
        # The TorchScript-based exporter needs only `onnx`; the newer torch.export-based
        # one also needs `onnxscript`. Its deprecation notice, and its note that a slice
        # could not be constant-folded (the graph is right without), are not the user's.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )


def run(args: argparse.Namespace) -> int:
    """``pynas train``: train, test, save, optionally export; prints the test accuracy."""
    genotype = read_genotype(args.file)
    data = load_dataset(args.dataset, args.data_dir, limit_train=args.limit_train)
    out = Path(args.out or Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {out}: {error.strerror}") from None
    model, metrics = train(genotype, data, args, progress=sys.stderr.isatty())
    torch.save(model.state_dict(), out / "model.pt")
    options = {key: value for key, value in vars(args).items() if not key.startswith("_")}
    document = {"genotype": genotype, "dataset": args.dataset, **metrics, "options": options}
    atomic_write(out / "metrics.json", (json.dumps(document, indent=2) + "\n").encode())
    if args.export:
        export_onnx(model, data.input_shape, Path(args.export))
    print(
        f"test accuracy {metrics['test_acc']:.2f}% (val {metrics['val_acc']:.2f}%, "
        f"{metrics['params']:,} parameters, {args.epochs} epochs); saved in {out}"
    )
    return 0
