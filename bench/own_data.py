"""Searches on a user's own files, end to end through the ``pynas`` command, defaults only.

- images: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) written out as PNG class
  folders, ``train/`` from the official training set and ``test/`` from the official test
  set (pynas holds validation out of ``train/``); ``pynas search evolution --dataset DIR
  --budget 10 --epochs 2``, then ``pynas train RUN_DIR``.
- table: scikit-learn's diabetes table written as CSV; ``pynas search rl --dataset
  diabetes.csv --target target --budget 20`` (the mlp space by default), then ``pynas
  train RUN_DIR``, beside a ridge regression fitted on the same training split (its
  regularisation chosen on the same validation split).

Prints a Markdown table: data kind, dataset, strategy, evaluations, seconds per
evaluation, best validation score, retrained test score.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def pynas(*arguments: str) -> float:
    """Run ``pynas ARGUMENTS`` (this interpreter), echoing its output; returns seconds."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "pynas", *arguments]
    print("+ pynas " + " ".join(arguments), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def write_fashion_pngs(folder: Path, per_class_train: int, per_class_test: int) -> None:
    """The first ``per_class_*`` images of each class, as PNG files in class folders."""
    from PIL import Image

    from pynas.data.builtin import _read_idx

    names = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
             "bag", "boot")
    parts = {"train": ("train", per_class_train), "test": ("t10k", per_class_test)}
    for part, (prefix, per_class) in parts.items():
        images = _read_idx(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz")
        for label, name in enumerate(names):
            (folder / part / name).mkdir(parents=True, exist_ok=True)
            for index in np.flatnonzero(labels == label)[:per_class]:
                Image.fromarray(images[index]).save(folder / part / name / f"{index}.png")


def run_images(work: Path, per_class_train: int, per_class_test: int) -> dict:
    folder = work / "fashion-png"
    if not folder.exists():
        write_fashion_pngs(folder, per_class_train, per_class_test)
    run = work / "fashion-search"
    seconds = pynas("search", "evolution", "--dataset", str(folder), "--budget", "10",
                    "--epochs", "2", "--out", str(run), "--overwrite")
    pynas("train", str(run), "--export", str(run / "export"))
    result = row("images", f"Fashion-MNIST PNGs ({10 * per_class_train} train)", run, seconds)
    result["ONNX test, without pynas"] = onnx_accuracy(run / "export" / "model.onnx",
                                                       folder / "test")
    return result


# Runs in a fresh interpreter where `import pynas` fails (None in sys.modules): reads the
# test PNGs with Pillow, runs the exported ONNX model with onnxruntime, prints the accuracy.
# Classes are numbered in sorted folder order, as pynas numbers them. argv: model, folder.
ONNX_WITHOUT_PYNAS = r"""
import sys
sys.modules["pynas"] = None
from pathlib import Path
import numpy as np
import onnxruntime
from PIL import Image

classes = sorted(path for path in Path(sys.argv[2]).iterdir() if path.is_dir())
images, labels = [], []
for label, folder in enumerate(classes):
    for file in sorted(folder.iterdir()):
        images.append(np.asarray(Image.open(file).convert("L"), dtype=np.float32)[None])
        labels.append(label)
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
logits = session.run(None, {session.get_inputs()[0].name: np.stack(images)})[0]
print(100 * float((logits.argmax(axis=1) == np.array(labels)).mean()))
"""


def onnx_accuracy(model: Path, test_folder: Path) -> str:
    """Test accuracy of the exported ONNX model, run in a process without pynas."""
    child = subprocess.run([sys.executable, "-I", "-c", ONNX_WITHOUT_PYNAS, str(model),
                            str(test_folder)], check=True, capture_output=True, text=True)
    return f"test_acc {float(child.stdout.split()[-1]):.4g}"


def run_table(work: Path, split_seed: int) -> dict:
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes()
    path = work / "diabetes.csv"
    columns = [*diabetes.feature_names, "target"]
    values = np.column_stack([diabetes.data, diabetes.target])
    np.savetxt(path, values, delimiter=",", header=",".join(columns), comments="", fmt="%.8g")
    run = work / f"diabetes-search-{split_seed}"
    # the default split seed is 0: it is given only to measure other splits
    split = [] if split_seed == 0 else ["--split-seed", str(split_seed)]
    seconds = pynas("search", "rl", "--dataset", str(path), "--target", "target", "--budget",
                    "20", *split, "--out", str(run), "--overwrite")
    pynas("train", str(run))
    result = row("table", f"diabetes.csv (442 rows, 10 features), split seed {split_seed}",
                 run, seconds)
    result["ridge test R²"] = ridge_on_the_same_split(path, split_seed)
    return result


def ridge_on_the_same_split(path: Path, split_seed: int) -> float:
    """Ridge regression on pynas's own split of ``path``: fitted on the training split,
    its alpha chosen on the validation split, scored on the test split."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    from pynas.data import load_dataset

    data = load_dataset(str(path), target=("target",), split_seed=split_seed)
    features = {part: getattr(data, part).inputs.numpy() for part in ("train", "valid", "test")}
    targets = {part: getattr(data, part).targets.numpy()[:, 0] for part in features}
    mean, std = features["train"].mean(axis=0), features["train"].std(axis=0)
    scaled = {part: (values - mean) / std for part, values in features.items()}
    alphas = 10.0 ** np.arange(-3, 4)
    scores = [r2_score(targets["valid"], Ridge(alpha=alpha).fit(scaled["train"], targets["train"])
                       .predict(scaled["valid"])) for alpha in alphas]
    best = Ridge(alpha=alphas[int(np.argmax(scores))]).fit(scaled["train"], targets["train"])
    return float(r2_score(targets["test"], best.predict(scaled["test"])))


def row(kind: str, dataset: str, run: Path, seconds: float) -> dict:
    result = json.loads((run / "result.json").read_text())
    trained = json.loads((run / "train" / "metrics.json").read_text())
    test_name = "test_acc" if result["score_name"] == "val_acc" else "test_r2"
    return {
        "data": kind,
        "dataset": dataset,
        "strategy": result["strategy"],
        "evaluations": result["evaluations"],
        "seconds per evaluation": seconds / max(1, result["evaluations"]),
        "best validation": f"{result['score_name']} {result['best']['score']:.4g}",
        "retrained test": f"{test_name} {trained[test_name]:.4g}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-own-data"))
    parser.add_argument("--only", choices=("images", "table"))
    parser.add_argument("--per-class-train", type=int, default=600)
    parser.add_argument("--per-class-test", type=int, default=200)
    parser.add_argument("--split-seeds", default="0",
                        help="split seeds of the table, comma-separated (default: 0)")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.only in (None, "table"):
        for split_seed in (int(seed) for seed in args.split_seeds.split(",")):
            rows.append(run_table(args.work_dir, split_seed))
    if args.only in (None, "images"):
        if not FASHION_MNIST.is_dir():
            print(f"{FASHION_MNIST} is absent: apt-get install dataset-fashion-mnist",
                  file=sys.stderr)
        else:
            rows.append(run_images(args.work_dir, args.per_class_train, args.per_class_test))
    columns = list(dict.fromkeys(key for entry in rows for key in entry))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for entry in rows:
        cells = [f"{entry[c]:.3f}" if isinstance(entry.get(c), float) else str(entry.get(c, ""))
                 for c in columns]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
