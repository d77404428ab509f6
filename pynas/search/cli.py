"""``pynas search STRATEGY [options]``: search a space, record the run, print the best.

Strategies are a registry, :data:`STRATEGIES`: a name and the module that implements it.
A strategy module exposes either

- ``build(space, args) -> Strategy``: an ask/tell strategy, driven by the shared loop
  (:func:`pynas.search.loop.run_search`), which handles evaluators, executors, the trial
  database, checkpoints and resume for it; or
- ``run(args, run_dir) -> int``: a strategy that drives itself (one-shot DARTS trains a
  supernet rather than asking for architectures), given the prepared run directory;

and, optionally, ``add_arguments(parser)`` for its own options and
``check_arguments(space, args)`` to refuse them before the run directory is created. Adding
a strategy is one line here and one module.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from pynas.costs import (
    LATENCY_MIN_SECONDS,
    LATENCY_REPEATS,
    LATENCY_WARMUP,
    Constraints,
    CostModel,
    parse_count,
    parse_milliseconds,
)
from pynas.data import DATASETS, TASKS, TEST_FRACTION, VALID_FRACTION, DatasetSplits, DataSpec
from pynas.errors import UsageError
from pynas.evaluate import Evaluator, FunctionEvaluator, TableEvaluator, TrainEvaluator
from pynas.evaluate.train import _parse_device as parse_device
from pynas.evaluate.train import cached_dataset
from pynas.executors import Executor, ProcessPoolExecutor, RayExecutor, SerialExecutor
from pynas.objectives import COST_MEASURES, LATENCY_MEASURES, Objectives, parse_objectives
from pynas.plots import test_counterpart
from pynas.runs import RunDirectory
from pynas.search.loop import Budget, run_search
from pynas.spaces import SPACES, SearchSpace, get_space
from pynas.spaces.base import IMAGE
from pynas.threads import ThreadPlan, plan_threads, usable_cpus

#: ``pynas search NAME`` -> the module implementing it (see the module docstring)
STRATEGIES: dict[str, str] = {
    "random": "pynas.search.random_search",
    "evolution": "pynas.search.evolution",
    "pnas": "pynas.search.pnas",
    "rl": "pynas.search.rl.reinforce",
    "darts": "pynas.search.darts",
}

#: Arguments that say how or where a run goes, not what it computes (with the top-level
#: parser's own, ``command`` and ``version``): a run may be resumed with other values.
#: Every other argument is recorded in config.json and must match on resume.
_HOW_NOT_WHAT = {
    "out",
    "resume",
    "overwrite",
    "budget",
    "budget_seconds",
    "executor",
    "workers",
    "ray_address",
    "threads",
    "threads_per_process",
    "device",
    "command",
    "version",
}

#: Arguments that say how a finished search becomes an architecture (DARTS's
#: ``--selection``): recorded in config.json, and a resume may change them, choosing again
#: from the trained supernet without training it again.
_CHOSEN_AFTER_TRAINING = ("selection",)

#: arguments that name files: recorded as absolute paths, so a resume may start elsewhere
_PATH_ARGUMENTS = ("benchmark", "data_dir")

#: the space searched when --space is not given, by the kind of data
DEFAULT_SPACES = {"image": "nb201", "features": "mlp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-command per registered strategy, each with the common options."""
    strategies = parser.add_subparsers(dest="strategy", metavar="STRATEGY", required=True)
    for name in STRATEGIES:
        module = strategy_module(name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        sub = strategies.add_parser(name, help=summary, description=summary)
        _add_common_arguments(sub)
        if hasattr(module, "add_arguments"):
            module.add_arguments(sub)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--space",
        help=f"search space: {', '.join(SPACES)} (default: nb201 for images, mlp for "
        "feature vectors)",
    )
    data = parser.add_argument_group(
        "data",
        "a built-in dataset or your own: a folder of images in class subfolders (optionally "
        "under train/, valid/ or val/, test/), an .npz or .pt file of arrays x, y (and "
        "x_valid, y_valid, x_test, y_test), or a CSV table with --target",
    )
    data.add_argument(
        "--dataset",
        metavar="NAME|PATH",
        help="digits, mnist, fashion-mnist, cifar10, cifar100, or a path (default: digits)",
    )
    data.add_argument("--data-dir", help="where a built-in dataset's files are")
    data.add_argument(
        "--target",
        type=_names,
        metavar="COLUMN[,COLUMN...]",
        help="the CSV column(s) to predict (several: multi-target regression)",
    )
    data.add_argument(
        "--task",
        choices=TASKS,
        help="default: classification for integer or text labels (up to 100 classes), "
        "regression otherwise",
    )
    data.add_argument(
        "--image-size",
        type=_image_size,
        metavar="HxW",
        help="resize a folder's images to this (default: their most common size)",
    )
    data.add_argument(
        "--valid-fraction",
        type=float,
        default=VALID_FRACTION,
        help="share of your data held out for validation when it has no split of its own "
        "(default: %(default)s)",
    )
    data.add_argument(
        "--test-fraction",
        type=float,
        default=TEST_FRACTION,
        help="likewise for the test split (default: %(default)s)",
    )
    data.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="fixes the held-out examples, stratified by class (default: %(default)s)",
    )
    data.add_argument(
        "--limit-train", type=int, metavar="N", help="train on a fixed subset of N examples"
    )
    evaluation = parser.add_argument_group(
        "evaluation", "train on the data, or read a benchmark table"
    )
    evaluation.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="training epochs per architecture (default: %(default)s)",
    )
    evaluation.add_argument(
        "--batch-size",
        type=int,
        help="training examples per step (default: 32; darts: 64 per process, for each half)",
    )
    evaluation.add_argument(
        "--lr",
        type=float,
        help="initial learning rate of each training, cosine-annealed (default: 0.1, SGD)",
    )
    evaluation.add_argument("--device", default="cpu", help="training device (default: cpu)")
    evaluation.add_argument(
        "--benchmark", metavar="FILE", help="a benchmark table (CSV) to read scores from"
    )
    evaluation.add_argument(
        "--metric", metavar="COLUMN", help="the table's column to maximise (with --benchmark)"
    )
    evaluation.add_argument(
        "--cost-column",
        metavar="COLUMN",
        help="the table's column of training seconds (with --benchmark)",
    )
    costs = parser.add_argument_group(
        "costs and constraints",
        "every trial records the parameters (params), multiply-adds (flops) and peak "
        "activation bytes of its network, measured before training (on a table: the "
        "table's CIFAR-10 networks, 3x32x32 inputs and 10 classes, and the peak activation "
        "only when an objective names it); a candidate that "
        "breaks a limit is never trained and counts as infeasible, outside the budget. "
        "Counts take SI suffixes: 500k, 2M, 1.5G",
    )
    costs.add_argument("--max-params", metavar="COUNT",
                       help="at most this many trainable parameters")
    costs.add_argument("--max-flops", metavar="COUNT",
                       help="at most this many multiply-adds for one example")
    costs.add_argument(
        "--max-latency-ms",
        metavar="MS",
        help="at most this many milliseconds for a forward pass of one example on --device "
        f"(median of {LATENCY_REPEATS} or more passes, {LATENCY_MIN_SECONDS:g} s of them, "
        f"after {LATENCY_WARMUP} warm-up ones, on the search's "
        "threads); implies --measure-latency",
    )
    costs.add_argument(
        "--measure-latency",
        action="store_true",
        # None when absent, as in the config.json of runs recorded before it existed
        default=None,
        help="also record each trial's latency on --device, for one example (latency_ms) "
        "and a training batch (batch_latency_ms)",
    )
    costs.add_argument(
        "--objectives",
        metavar="NAME[:max|min],...",
        help="search for the Pareto front of two or more metrics: the evaluator's (val_acc, "
        "val_rmse, a table's columns such as cifar10_valid) and the cost measures (params, "
        "flops, peak_activation_bytes, latency_ms); each maximised or minimised as its name "
        "says, or as :max/:min says. Writes pareto.json and pareto.png",
    )
    budget = parser.add_argument_group("budget (one or both)")
    budget.add_argument("--budget", type=int, metavar="N", help="finished evaluations")
    budget.add_argument(
        "--budget-seconds",
        type=float,
        metavar="S",
        help="seconds: simulated on a table (the sum of its training "
        "times), wall seconds otherwise",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    run = parser.add_argument_group("run directory")
    run.add_argument(
        "--out", metavar="DIR", help="run directory (default: runs/STRATEGY-SPACE-TIMESTAMP)"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out DIR (after a crash or a kill); an error where "
        "DIR holds no run",
    )
    run.add_argument("--overwrite", action="store_true", help="replace the run in --out DIR")
    execution = parser.add_argument_group("execution")
    execution.add_argument(
        "--executor",
        choices=("serial", "pool", "ray"),
        help="where evaluations run (default: serial, or pool with --workers above 1)",
    )
    execution.add_argument(
        "--workers", type=int, help="parallel evaluations (default: one per CPU for pool/ray)"
    )
    execution.add_argument(
        "--ray-address", metavar="ADDRESS", help="a Ray cluster to use (default: start Ray locally)"
    )
    execution.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads of the search, divided among --workers (default: $PYNAS_THREADS, "
        "$OMP_NUM_THREADS, or the cores free when it starts: a core another process keeps "
        "busy would stall every parallel step)",
    )


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected COLUMN[,COLUMN...], got {text!r}")
    return names


def _image_size(text: str) -> tuple[int, int]:
    """``HxW`` or ``N`` (square) as ``(height, width)``, each at least 1."""
    try:
        sizes = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW or N, got {text!r}")
    return sizes  # type: ignore[return-value]


def strategy_module(name: str) -> ModuleType:
    """The module registered for ``name``."""
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")
    return importlib.import_module(STRATEGIES[name])


def run(args: argparse.Namespace) -> int:
    """``pynas search``: run the search ``args`` describe and print a summary line."""
    module = strategy_module(args.strategy)
    # The data is read and checked, and the space chosen, before the run directory is
    # created: bad input leaves nothing behind.
    prepare_inputs(args)
    threads = plan_search_threads(args)
    if hasattr(module, "run"):
        # under torchrun only rank 0 owns (and writes) the run directory
        owns_run = os.environ.get("RANK", "0") == "0"
        run_dir = prepare_run_directory(args) if owns_run else None
        use_threads(args, threads)
        return int(module.run(args, run_dir) or 0)
    run_dir = prepare_run_directory(args)
    use_threads(args, threads)
    result = search(args, run_dir, progress=sys.stderr.isatty())
    print(summary_line(result, run_dir.path))
    if result["best"] is None:
        return 1
    print(retrain_line(run_dir.path))
    return 0


def plan_search_threads(args: argparse.Namespace) -> ThreadPlan:
    """The threads of the search ``args`` describe: ``--threads`` or the free cores,
    divided among its worker processes (:mod:`pynas.threads`)."""
    workers = 1
    if executor_name(args) != "serial":
        workers = args.workers or len(usable_cpus())
    return plan_threads(args.threads, workers)


def use_threads(args: argparse.Namespace, plan: ThreadPlan) -> None:
    """Set this process's torch threads, and ``args.threads_per_process`` for the
    workers; :func:`announce_threads` says why when busy cores leave fewer than all."""
    import torch

    torch.set_num_threads(plan.per_process)
    args.threads_per_process = plan.per_process
    args._threads_note = plan.note()


def announce_threads(args: argparse.Namespace) -> None:
    """Print the note of :func:`use_threads`, once, when the search starts computing
    (after every check, so that an error stays one line)."""
    note = getattr(args, "_threads_note", None)
    if note is not None:
        print(f"pynas: {note}", file=sys.stderr)
        args._threads_note = None


def retrain_line(path: Path) -> str:
    """The last line of a search: how to retrain and test what it found."""
    return f"retrain the best architecture and test it: pynas train {path}"


def data_spec(args: argparse.Namespace) -> DataSpec:
    """Where the data of ``args`` comes from (a built-in name or the user's path)."""
    return DataSpec(
        dataset=args.dataset or "digits",
        data_dir=args.data_dir,
        target=args.target,
        task=args.task,
        image_size=args.image_size,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        limit_train=args.limit_train,
    )


def load_data(args: argparse.Namespace) -> DatasetSplits | None:
    """The data ``args`` name (``args._data`` when given from Python), loaded once per
    process; ``None`` for a benchmark table or a user evaluation without data."""
    data = getattr(args, "_data", None)
    if data is not None or args.benchmark is not None:
        return data
    if getattr(args, "_evaluate", None) is not None and args.dataset is None:
        return None
    return cached_dataset(data_spec(args))


def prepare_inputs(args: argparse.Namespace) -> None:
    """Check the data, evaluator and space of ``args``; fills in ``args.space`` (the
    default for the data's kind) and keeps the evaluator in ``args._evaluator``."""
    check_constraints(args)
    evaluator, simulated_time = make_evaluator(args)
    data = load_data(args)
    if args.space is None:
        args.space = DEFAULT_SPACES[data.kind] if data is not None else "nb201"
    if data is not None:
        get_space(args.space).check_input(data.input_shape)
    check_table_space(evaluator, args.space)
    args._evaluator, args._simulated_time = evaluator, simulated_time
    args._network = network_shape(args, evaluator, data)
    if args._network is None and (constraints(args).given() or args.measure_latency):
        raise UsageError("--max-params, --max-flops, --max-latency-ms and --measure-latency "
                         f"measure networks, whose input a table of the {args.space} space "
                         "does not give")
    args._objectives = check_objectives(args, evaluator)


def check_objectives(args: argparse.Namespace, evaluator: Evaluator) -> Objectives | None:
    """``--objectives`` parsed, each name checked against the evaluator's metrics and the
    cost measures; a latency objective turns on ``--measure-latency``. A strategy that
    drives itself (DARTS) checks them itself."""
    objectives = parse_objectives(args.objectives)
    if objectives is None or not hasattr(strategy_module(args.strategy), "build"):
        return objectives
    names = evaluator.metric_names()
    if names is not None:
        measures = list(COST_MEASURES) if args._network is not None else []
        where = "the table " + str(args.benchmark) if args.benchmark is not None else "this search"
        objectives.check_names([*names, *measures], where)
    if any(name in LATENCY_MEASURES for name in objectives.names):
        parse_device(args.device)
        args.measure_latency = True
    return objectives


def check_constraints(args: argparse.Namespace) -> None:
    """Turn the limits of ``args`` into numbers (``2M`` -> 2000000), refusing bad ones and
    strategies that do not ask for candidates, while nothing is written yet."""
    args.max_params = parse_count(args.max_params, "--max-params")
    args.max_flops = parse_count(args.max_flops, "--max-flops")
    args.max_latency_ms = parse_milliseconds(args.max_latency_ms, "--max-latency-ms")
    # True or absent (None), as the command's flag gives it; from Python, False is absent
    args.measure_latency = bool(args.measure_latency or args.max_latency_ms) or None
    if args.measure_latency:
        parse_device(args.device)  # latency is measured there, by the search itself
    if not hasattr(strategy_module(args.strategy), "build") and (
            constraints(args).given() or args.measure_latency):
        raise UsageError(f"{args.strategy} trains one supernet: --max-params, --max-flops, "
                         "--max-latency-ms and --measure-latency apply to the strategies that "
                         "train candidates")


def constraints(args: argparse.Namespace) -> Constraints:
    """The limits that ``args`` set (after :func:`check_constraints`)."""
    return Constraints(args.max_params, args.max_flops, args.max_latency_ms)


def network_shape(args: argparse.Namespace, evaluator: Evaluator,
                  data: DatasetSplits | None) -> tuple[tuple[int, ...], int] | None:
    """The input shape and outputs of the networks whose costs the search measures: the
    data's, the user evaluation's, or a table's (for image spaces); ``None`` for a table
    of a feature-vector space."""
    if isinstance(evaluator, TableEvaluator):
        if get_space(args.space).input_kind != IMAGE:
            return None
        return evaluator.input_shape, evaluator.num_outputs
    if data is not None:
        return tuple(data.input_shape), data.num_outputs
    return tuple(args._input_shape), args._num_outputs


def cost_model(args: argparse.Namespace, space: SearchSpace) -> CostModel | None:
    """What the search measures of its candidates and the limits they must meet."""
    if args._network is None:
        return None
    # latency at the trainer's batch size when none is given
    batch_size = args.batch_size or inspect.signature(TrainEvaluator).parameters[
        "batch_size"].default
    # on a table, the tracked forward pass would cost more than the look-up
    objectives = getattr(args, "_objectives", None)
    peak_activation = not args._simulated_time or (
        objectives is not None and "peak_activation_bytes" in objectives.names)
    return CostModel(space, *args._network, constraints(args),
                     latency_batch_size=batch_size if args.measure_latency else None,
                     device=args.device, peak_activation=peak_activation)


def check_table_space(evaluator: Evaluator, space_name: str) -> None:
    """Refuse a benchmark table of another space before anything is evaluated (each
    evaluation would otherwise fail); any other evaluator passes."""
    if isinstance(evaluator, TableEvaluator):
        evaluator.check_space(get_space(space_name))


def prepare_run_directory(args: argparse.Namespace) -> RunDirectory:
    """Create ``--out`` (or check that it may be resumed) and record the run's config."""
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR, the run to continue")
    out = args.out or Path("runs") / (
        f"{args.strategy}-{args.space}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if args.resume and not RunDirectory(out).config_path.is_file():
        # a mistyped --out would otherwise start a new run where the user meant to continue
        raise UsageError(f"{out} holds no run to resume: drop --resume to start one there")
    check_strategy_arguments(args)
    run_dir = RunDirectory.prepare(out, resume=args.resume, overwrite=args.overwrite)
    config = run_config(args)
    stored = run_dir.read_config()
    if stored is None:
        run_dir.write_config(config)
        return run_dir
    # the strategy first: another strategy also has other options
    for key in sorted(set(stored) | set(config), key=lambda key: (key != "strategy", key)):
        if stored.get(key) != config.get(key) and key not in _CHOSEN_AFTER_TRAINING:
            flag = "strategy" if key == "strategy" else "--" + key.replace("_", "-")
            raise UsageError(
                f"{run_dir.path} was started with {flag} {stored.get(key)}, not "
                f"{config.get(key)}: resume with the run's own arguments"
            )
    if stored != config:  # a finished search chosen again (--selection)
        run_dir.write_config(config)
    return run_dir


def check_strategy_arguments(args: argparse.Namespace) -> None:
    """Let the strategy refuse its options (a budget too small for them...) while bad input
    still leaves nothing behind."""
    module = strategy_module(args.strategy)
    if hasattr(module, "check_arguments"):
        module.check_arguments(get_space(args.space), args)


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """What the run computes (``config.json``): the arguments a resume must repeat."""
    config = {
        key: value
        for key, value in vars(args).items()
        if key not in _HOW_NOT_WHAT and not key.startswith("_")
    }
    for key in _PATH_ARGUMENTS:
        if config.get(key) is not None:
            config[key] = str(Path(config[key]).resolve())
    if config.get("dataset") is not None and config["dataset"] not in DATASETS:
        config["dataset"] = str(Path(config["dataset"]).resolve())
    # as JSON gives them back, so that a resume compares like with like
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in config.items()}


def search(
    args: argparse.Namespace, run_dir: RunDirectory, progress: bool = False
) -> dict[str, Any]:
    """Run the ask/tell search ``args`` describe in ``run_dir``; return ``result.json``.

    This is the Python API behind ``pynas search`` (``bench/nb201.py`` uses it).
    """
    module = strategy_module(args.strategy)
    if not hasattr(module, "build"):
        raise UsageError(f"strategy {args.strategy!r} is not an ask/tell strategy")
    if getattr(args, "_evaluator", None) is None:
        prepare_inputs(args)
    space: SearchSpace = get_space(args.space)
    # before the strategy: PNAS takes the cost objectives from it
    costs = args._costs = cost_model(args, space)
    strategy = module.build(space, args)
    budget = Budget(args.budget, args.budget_seconds, simulated_time=args._simulated_time)
    executor = make_executor(args)
    announce_threads(args)
    result = run_search(strategy, args._evaluator, run_dir, budget, executor, progress,
                        costs=costs)
    return result


def make_evaluator(args: argparse.Namespace) -> tuple[Evaluator, bool]:
    """The evaluator the arguments ask for, and whether its seconds are simulated."""
    user_function = getattr(args, "_evaluate", None)
    if args.benchmark is None:
        if args.cost_column is not None or (args.metric is not None and user_function is None):
            raise UsageError("--metric and --cost-column need --benchmark FILE")
        data = getattr(args, "_data", None)
        if user_function is not None:
            if data is None and args.dataset is not None:
                data = data_spec(args)
                data.check()
            return FunctionEvaluator(
                user_function,
                data,
                input_shape=getattr(args, "_input_shape", None),
                num_outputs=getattr(args, "_num_outputs", None),
                metric=args.metric,
                seed=args.seed,
                device=args.device,
            ), False
        # the trainer's own defaults for what the command leaves unset
        given = {key: value for key, value in (("batch_size", args.batch_size), ("lr", args.lr))
                 if value is not None}
        evaluator = TrainEvaluator(
            data_spec(args) if data is None else data,
            epochs=args.epochs,
            device=args.device,
            seed=args.seed,
            **given,
        )
        return evaluator, False
    if user_function is not None:
        raise UsageError("give a benchmark table or your own evaluation function, not both")
    if args.dataset is not None or args.data_dir is not None:
        raise UsageError("give --dataset or --benchmark, not both")
    if args.metric is None:
        raise UsageError("--benchmark needs --metric COLUMN, the column to maximise")
    if args.budget_seconds is not None and args.cost_column is None:
        raise UsageError(
            "--budget-seconds on a benchmark needs --cost-column COLUMN, "
            "the table's training seconds"
        )
    return TableEvaluator(args.benchmark, args.metric, cost_column=args.cost_column), True


def executor_name(args: argparse.Namespace) -> str:
    """``--executor``, or its default: serial, or pool with ``--workers`` above 1."""
    return args.executor or ("pool" if (args.workers or 1) > 1 else "serial")


def make_executor(args: argparse.Namespace) -> Executor:
    """The executor the arguments ask for."""
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    name = executor_name(args)
    if args.ray_address is not None and name != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if name == "serial":
        if (args.workers or 1) > 1:
            raise UsageError("--workers above 1 needs --executor pool or ray")
        return SerialExecutor()
    threads = getattr(args, "threads_per_process", None)
    if name == "pool":
        return ProcessPoolExecutor(args.workers, threads=threads)
    return RayExecutor(args.workers, address=args.ray_address, threads=threads)


def summary_line(result: dict[str, Any], path: Path) -> str:
    """One line: what ran, how many evaluations, the best architecture, where it is."""
    head = (
        f"{result['strategy']} on {result['space']}: {result['evaluations']} evaluations, "
        f"{result['failed']} failed"
    )
    if result.get("costs", {}).get("constraints"):
        head += f", {result['infeasible']} infeasible (not trained)"
    best = result["best"]
    if best is None:
        return f"{head}, none finished; see {path / RunDirectory.TRIALS}"
    score_name = result.get("score_name", "val_acc")
    scores = f"{score_name} {best['score']:.4g}"
    test_name = test_counterpart(score_name, best["metrics"])
    if test_name is not None:
        scores += f", {test_name} {best['metrics'][test_name]:.4g}"
    return f"{head}; best {best['arch']} ({scores}); {path / RunDirectory.RESULT}"
