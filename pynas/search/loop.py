"""The shared ask/tell driver: a strategy, an evaluator, an executor and a run directory.

Every ask/tell strategy (random, evolution, RL, PNAS) runs through :func:`run_search`,
which owns the crash safety of a run. Its ordering, which makes a SIGKILL at any moment
harmless:

1. the strategy proposes candidates (``ask``); each gets a new trial number;
2. the checkpoint is replaced by one holding the strategy state *after* that ask and the
   asked trials as *pending* (asked, not yet told);
3. each trial gets a ``running`` row in ``trials.sqlite`` and is submitted;
4. when its evaluation completes, the row becomes ``finished`` (or ``failed``);
5. the strategy is told the result, and the trial leaves the pending set (in memory: the
   next checkpoint records it).

On resume the checkpoint restores the strategy and the pending trials. A pending trial
whose row finished (or failed) is told from the database, in the order the results came,
so its evaluation is never repeated. A pending trial without such a row was killed
during evaluation (its ``running`` row becomes ``interrupted``) or before it started: it
gets a new attempt. A kill before step 2 loses only the ask itself: nothing was recorded
for its candidates, and the restored strategy asks again (for the same candidates, since
strategies are seeded).

With a :class:`~pynas.costs.CostModel`, every candidate is measured before it is trained.
One that breaks a constraint is never trained and gets no trial number: the strategy is
told ``None`` at once, as for a failed evaluation (random search draws another, evolution
drops the child and mutates again, RL leaves it out of its update, PNAS neither expands
it nor fits its surrogate on it), and is asked again, all before the checkpoint of step 2.
Such candidates are counted apart (``infeasible`` in ``result.json``), outside the budget;
after :data:`MAX_INFEASIBLE_IN_A_ROW` of them in a row the search stops asking.

A strategy is told :meth:`Strategy.value_of` a trial's metrics: the score, or with
several objectives (``strategy.objectives``) their vector (RL: its cost-weighted reward).
Such a run ends by writing ``pareto.json`` and ``pareto.png`` (the finished trials no
other finished trial dominates, :func:`pareto_attempts`) and adds ``objectives`` and
``pareto`` to ``result.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from pynas.costs import CostModel
from pynas.errors import UsageError
from pynas.evaluate.base import Evaluator
from pynas.executors import Completion, Executor, SerialExecutor
from pynas.objectives import Objectives, pareto_front
from pynas.plots import plot_pareto, plot_search_curve
from pynas.runs import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    Attempt,
    RunDirectory,
    TrialStore,
    best_attempt,
    finished_in_order,
    load_checkpoint,
)
from pynas.search.base import Strategy
from pynas.spaces.base import Arch

_CHECKPOINT_VERSION = 1

#: candidates in a row that break the constraints after which a search stops asking
MAX_INFEASIBLE_IN_A_ROW = 1000


@dataclass(frozen=True)
class Budget:
    """When a search stops asking for candidates.

    Parameters
    ----------
    evaluations
        Finished evaluations to reach, exactly (failed ones do not count).
    seconds
        Seconds to spend: the sum of the evaluations' ``seconds`` when
        ``simulated_time`` (a benchmark table's training times), wall seconds otherwise.
    simulated_time
        Whether the evaluator's ``seconds`` are simulated rather than spent.
    max_failures
        Stop once this many evaluations have failed; default: ``evaluations``, or 100
        with only a time budget (a broken evaluator must not loop for ever).
    """

    evaluations: int | None = None
    seconds: float | None = None
    simulated_time: bool = False
    max_failures: int | None = None

    def __post_init__(self) -> None:
        if self.evaluations is None and self.seconds is None:
            raise UsageError("give a budget: --budget N evaluations or --budget-seconds S")
        if self.evaluations is not None and self.evaluations < 1:
            raise UsageError(f"--budget must be at least 1, got {self.evaluations}")
        if self.seconds is not None and self.seconds <= 0:
            raise UsageError(f"--budget-seconds must be positive, got {self.seconds}")

    @property
    def failure_limit(self) -> int:
        """Failed evaluations after which the search stops asking."""
        if self.max_failures is not None:
            return self.max_failures
        return self.evaluations if self.evaluations is not None else 100


def run_search(
    strategy: Strategy,
    evaluator: Evaluator,
    run: RunDirectory,
    budget: Budget,
    executor: Executor | None = None,
    progress: bool = False,
    costs: CostModel | None = None,
) -> dict[str, Any]:
    """Search until the budget is spent, resuming what ``run`` already holds.

    Parameters
    ----------
    strategy
        A fresh strategy; its state is replaced by the checkpoint when there is one.
    evaluator
        Scores architectures of ``strategy.space``.
    run
        The run directory (see :meth:`RunDirectory.prepare`).
    budget
        When to stop asking.
    executor
        Where evaluations run; default :class:`~pynas.executors.SerialExecutor`.
    progress
        Show a progress bar on stderr.
    costs
        Measures every candidate before it is trained (see the module docstring); the
        measures join each finished trial's metrics.

    Returns
    -------
    dict
        The content written to ``result.json``.

    Raises
    ------
    UsageError
        When candidates broke the constraints and none was trained.
    """
    executor = executor or SerialExecutor()
    with run.lock(), run.open_store() as store:
        search = _Search(strategy, run, store, budget, costs)
        to_evaluate = search.restore()
        with (
            executor,
            tqdm(
                total=budget.evaluations,
                initial=search.finished,
                disable=not progress,
                file=sys.stderr,
                unit="eval",
            ) as bar,
        ):
            executor.start(strategy.space, evaluator)
            search.drive(executor, to_evaluate, bar)
        search.checkpoint()
        attempts = store.attempts()
    if costs is not None and search.infeasible and not search.finished and not search.failed:
        raise UsageError(
            f"no candidate met the constraints ({costs.constraints.describe()}): "
            f"{search.infeasible} broke them and none was trained; loosen them"
        )
    result = _result(search, evaluator, run, attempts)
    title = f"{strategy.name} on {strategy.space.name}"
    if strategy.objectives is not None:
        front = pareto_attempts(attempts, strategy.objectives)
        result["objectives"] = strategy.objectives.describe()
        result["pareto"] = [{"trial": a.trial, "arch": a.arch,
                             **{name: a.metrics[name] for name in strategy.objectives.names}}
                            for a in front]
        run.write_pareto({
            "objectives": result["objectives"],
            "trials": [{"trial": a.trial, "arch": a.arch,
                        "genotype": strategy.space.to_genotype(a.decisions),
                        "metrics": a.metrics} for a in front],
        })
        plot_pareto(attempts, front, strategy.objectives, run.pareto_plot_path, title=title,
                    limits=costs.constraints.given() if costs is not None else {})
    run.write_result(result)
    plot_search_curve(attempts, run.curve_path, title=title, score_name=result["score_name"])
    best = best_attempt(attempts)
    if best is not None and hasattr(strategy.space, "draw"):  # spaces that draw their cells
        strategy.space.draw(strategy.space.validate(best.decisions), run.path)
    return result


class _Search:
    """The state of one search session between the checkpoint and the database."""

    def __init__(
        self, strategy: Strategy, run: RunDirectory, store: TrialStore, budget: Budget,
        costs: CostModel | None = None,
    ) -> None:
        self.strategy, self.run, self.store, self.budget = strategy, run, store, budget
        self.costs = costs
        self.pending: dict[int, Arch] = {}  # asked, not yet told, by trial number
        self.next_trial = 0
        self.finished = self.failed = 0
        self.infeasible = self.infeasible_in_a_row = 0  # candidates never trained
        self.simulated_seconds = 0.0
        self.best_score: float | None = None
        self.stopped = ""
        self._earlier_wall_seconds = 0.0
        self._session_start = time.monotonic()

    @property
    def wall_seconds(self) -> float:
        return self._earlier_wall_seconds + time.monotonic() - self._session_start

    def restore(self) -> list[tuple[int, Arch]]:
        """Load the checkpoint and the database; return the trials that need evaluating."""
        attempts = self.store.attempts()
        for attempt in attempts:
            if attempt.state == RUNNING:  # its process died: this session is the writer now
                self.store.interrupt(attempt.id)
            elif attempt.state in (FINISHED, FAILED):
                self._count(attempt.metrics)
        if not self.run.checkpoint_path.exists():
            if attempts:
                raise UsageError(
                    f"{self.run.path} has trials but no {RunDirectory.CHECKPOINT}: it cannot "
                    "be resumed (start a new run with --overwrite)"
                )
            return []
        checkpoint = load_checkpoint(self.run.checkpoint_path)
        if checkpoint.get("version") != _CHECKPOINT_VERSION:
            raise UsageError(f"{self.run.checkpoint_path} was written by another pynas version")
        self.strategy.load_state_dict(checkpoint["strategy"])
        self.next_trial = checkpoint["next_trial"]
        self.pending = {int(trial): tuple(arch) for trial, arch in checkpoint["pending"].items()}
        self._earlier_wall_seconds = checkpoint["wall_seconds"]
        # absent from the checkpoints of runs started before constraints existed
        self.infeasible = checkpoint.get("infeasible", 0)
        self.infeasible_in_a_row = checkpoint.get("infeasible_in_a_row", 0)
        outcomes = {a.trial: a for a in attempts if a.state in (FINISHED, FAILED)}
        # results that came after the checkpoint: tell them in the order they came
        for outcome in sorted(
            (outcomes[t] for t in self.pending if t in outcomes), key=lambda a: (a.ended, a.id)
        ):
            self._tell(outcome.trial, outcome.metrics)
        return sorted(self.pending.items())

    def drive(self, executor: Executor, to_evaluate: list[tuple[int, Arch]], bar: tqdm) -> None:
        """Keep every worker busy until the budget is spent and nothing is in flight."""
        queue = deque(to_evaluate)
        in_flight: dict[int, int] = {}  # trial -> id of its running row
        while True:
            while len(in_flight) < executor.capacity:
                if not queue:
                    queue.extend(self._ask(executor.capacity - len(in_flight), len(in_flight)))
                    if not queue:
                        break
                trial, arch = queue.popleft()
                in_flight[trial] = self.store.start(
                    trial, self.strategy.space.to_string(arch), arch
                )
                executor.submit(trial, arch)
            if not in_flight:
                return
            for completion in executor.wait():
                self._record(completion, in_flight.pop(completion.trial))
                bar.n = self.finished
                bar.set_postfix(best=self.best_score, failed=self.failed, refresh=True)

    def _ask(self, free: int, in_flight: int) -> list[tuple[int, Arch]]:
        """New candidates for ``free`` workers, numbered and checkpointed as pending."""
        self.stopped = self._stop_reason(in_flight)
        if self.stopped:
            return []
        if self.budget.evaluations is not None:
            free = min(free, self.budget.evaluations - self.finished - in_flight)
        archs = self._ask_feasible(free)
        if not archs:
            self.stopped = self._stop_reason(in_flight) or "the strategy had no candidate"
            return []
        trials = list(enumerate(archs, start=self.next_trial))
        self.next_trial += len(archs)
        self.pending.update(trials)
        self.checkpoint()  # before any row exists for these trials: see the module docstring
        return trials

    def _ask_feasible(self, count: int) -> list[Arch]:
        """Up to ``count`` candidates that meet the constraints. Each one that breaks a
        constraint is told ``None`` at once and the strategy is asked again, until one
        is feasible, the strategy has none, or too many in a row were not."""
        while True:
            archs = [self.strategy.space.validate(arch) for arch in self.strategy.ask(count)]
            feasible = [arch for arch in archs if self._feasible(arch)]
            if feasible or not archs or self.infeasible_in_a_row >= MAX_INFEASIBLE_IN_A_ROW:
                return feasible

    def _feasible(self, arch: Arch) -> bool:
        if self.costs is None or self.costs.feasible(arch):
            self.infeasible_in_a_row = 0
            return True
        self.strategy.tell(arch, None)
        self.infeasible += 1
        self.infeasible_in_a_row += 1
        return False

    def _stop_reason(self, in_flight: int) -> str:
        budget = self.budget
        if budget.evaluations is not None and self.finished + in_flight >= budget.evaluations:
            return "budget of evaluations"
        if budget.seconds is not None:
            spent = self.simulated_seconds if budget.simulated_time else self.wall_seconds
            if spent >= budget.seconds:
                return "budget of seconds"
        if self.failed >= budget.failure_limit:
            return f"{self.failed} evaluations failed"
        if self.infeasible_in_a_row >= MAX_INFEASIBLE_IN_A_ROW:
            return f"{self.infeasible_in_a_row} candidates in a row broke the constraints"
        if self.strategy.finished():
            return "the strategy finished"
        return ""

    def _record(self, completion: Completion, row_id: int) -> None:
        if completion.error is None:
            if self.costs is not None:
                # the same keys of a table (a column "params"...) give way to the measures
                completion = dataclasses.replace(completion, metrics={
                    **completion.metrics, **self.costs.measure(self.pending[completion.trial])})
            if self.strategy.objectives is not None:
                # an objective the evaluator does not report stops the search here, with
                # the metrics it does report (the row is retried on resume)
                self.strategy.objectives.vector(completion.metrics)
            self.store.finish(row_id, completion.metrics, completion.worker)
        else:
            self.store.fail(row_id, completion.error, completion.worker)
        self._count(completion.metrics)
        self._tell(completion.trial, completion.metrics)

    def _count(self, metrics: dict[str, Any] | None) -> None:
        if metrics is None:
            self.failed += 1
            return
        self.finished += 1
        self.simulated_seconds += metrics["seconds"]
        if self.best_score is None or metrics["score"] > self.best_score:
            self.best_score = metrics["score"]

    def _tell(self, trial: int, metrics: dict[str, Any] | None) -> None:
        arch = self.pending.pop(trial)
        self.strategy.tell(arch, None if metrics is None else self.strategy.value_of(metrics))

    def checkpoint(self) -> None:
        self.run.save_checkpoint(
            {
                "version": _CHECKPOINT_VERSION,
                "strategy": self.strategy.state_dict(),
                "next_trial": self.next_trial,
                "pending": {trial: list(arch) for trial, arch in self.pending.items()},
                "wall_seconds": self.wall_seconds,
                "infeasible": self.infeasible,
                "infeasible_in_a_row": self.infeasible_in_a_row,
            }
        )


def pareto_attempts(attempts: list[Attempt], objectives: Objectives) -> list[Attempt]:
    """The finished attempts that no other finished attempt dominates in ``objectives``,
    best first in the first objective."""
    finished = finished_in_order(attempts)
    front = [finished[i] for i in pareto_front([objectives.vector(a.metrics) for a in finished])]
    return sorted(front, key=lambda a: (-objectives.vector(a.metrics)[0], a.trial))


def _result(
    search: _Search, evaluator: Evaluator, run: RunDirectory, attempts: list[Attempt]
) -> dict[str, Any]:
    space = search.strategy.space
    result: dict[str, Any] = {
        "strategy": search.strategy.name,
        "space": space.name,
        "seed": search.strategy.seed,
        "evaluations": search.finished,
        "failed": search.failed,
        "infeasible": search.infeasible,
        "interrupted": sum(a.state == INTERRUPTED for a in attempts),
        "seconds": round(search.wall_seconds, 3),
    }
    if search.budget.simulated_time:
        result["simulated_seconds"] = search.simulated_seconds
    result["stopped"] = search.stopped
    result["score_name"] = evaluator.score_name
    best = best_attempt(attempts)
    result["best"] = (
        None
        if best is None
        else {
            "trial": best.trial,
            "arch": best.arch,
            "genotype": space.to_genotype(best.decisions),
            "score": best.metrics["score"],
            # where the evaluator knows them (a test split, a table's test column)
            **{key: best.metrics[key] for key in ("val_acc", "test_acc") if key in best.metrics},
            "metrics": best.metrics,
        }
    )
    result["evaluator"] = evaluator.describe()
    if search.costs is not None:
        result["costs"] = search.costs.describe()
    result["config"] = run.read_config()
    return result
