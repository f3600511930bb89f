"""The adaptive search driver: ask the study for a trial, run it as an ordinary run, tell.

Each trial is a run like any sweep point: its overrides are composed, baked into its own
image, run by whichever backend, recorded, rerun by digest. What differs is that the
points are not known up front:

* **Identity.** The sweep id is a hash of the project, its environment and code keys,
  the command, the inputs' digests, the arguments and the search's settings
  (:meth:`SearchOptions.identity`), so re-submitting the same search, from any machine,
  names the same sweep; ``--trials`` is not in it, so raising it continues the search.
* **Trials.** Each trial is its own object, ``sweeps/<id>.trials/<number>`` (number, run
  id, parameters, overrides), made by a conditional create: two submitters of the same
  search never both get a number; the loser takes the next free one (or, with
  ``--trials`` reached, drops its asked trial). ``sweeps/<id>.json`` lists the runs and
  ``search.trials`` as a view of those objects, rewritten each time a trial is created
  (so ``orch results`` and ``orch watch`` see the search grow) and listed again after
  each rewrite: a rewrite lost to a concurrent submitter's older one is redone, so the
  last writer's document holds every trial.
* **Rebuild.** A submission reads the document and the trials' records and adds every
  finished trial to a fresh in-memory study (``add_trial``: values, state, the step curve
  when pruning). A trial without a finished record (killed with its submitter) or a
  failed/cancelled one (``--retry failed``) is asked again with the same parameters, so
  it keeps its run id; new trials are asked until the search has ``--trials`` of them.
* **Pruning.** While a trial runs, the driver reads its ``live.json`` (the latest step
  metrics, from the store, whichever node runs it), reports the objective at each new
  step and, when the pruner says so, writes a stop request into the store; the node's
  live publisher finds it, stops the container (grace period) and records the run
  ``pruned``. On finishing, the trial's full curve is read from ``metrics.jsonl``.

Starting a trial (inputs, image, backend, the wait for a run another submitter holds) is
the :class:`~..launcher.Launcher`'s, shared with the grid's driver. Why one module of
this size: the trials' document, the study's rebuild and the ask/run/tell loop are one
submission's state (``_State``), each step reading and changing the others'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...compose import config as configmod
from ...compose.space import Space, optuna_distributions
from ...errors import NotFound, OrchestratorError
from ...image.builder import Environment
from ...schema.job import Job
from ...schema.record import RunPlan, RunRecord, RunStatus, SweepDoc, SweepEntry, now_iso
from ...schema.spec import RunSpec
from ..grid import SweepResult, SweepRun, compose_each, plan
from ..inflight import InFlight
from ..launcher import Launcher
from .study import (
    MissingObjective,
    SearchOptions,
    frozen_trial,
    independent_trials,
    make_study,
    pruned_curve,
    replayable,
    step_values,
    values_of,
    would_prune,
)
from .trials import Trial, compose_space, search_sweep_id

log = logging.getLogger("orchestrator.search")

#: How often the driver looks at its running trials' step metrics when pruning: a
#: pruned container runs on for about this plus the node's live period (ORCH_LIVE_S)
#: after the step that condemns it; one small GET per running trial per poll.
POLL_S = 0.2


@dataclass
class _Flight:
    trial: Trial
    asked: Any  # optuna.trial.Trial
    spec: RunSpec
    followers: list[Any] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    #: The steps seen while polling, judged by a probe (see :func:`.study.would_prune`).
    seen: dict[int, float] = field(default_factory=dict)
    last_step: float | None = None
    stop_sent: bool = False


class SearchDriver:
    """A search whose points come from an Optuna study, trial by trial, started through
    its :class:`~..launcher.Launcher` (the one a grid's driver uses)."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def search(self, args: Sequence[str], space: Space, options: SearchOptions) -> SweepResult:
        options.check()
        launcher = self.launcher
        composer, _ = compose_space(launcher.project, ())
        distributions = optuna_distributions(space)
        # what parse_space composed, if anything
        env = launcher.environment(composer.files_read())
        # Every declared input: which ones a trial reads is known only once it is asked.
        digests = launcher.pin(list(launcher.project.inputs))
        sweep_id = search_sweep_id(launcher.project, env, args, options, digests)
        launcher.stop_requests = options.pruner is not None
        state = _State(launcher, sweep_id, args, space, options, distributions)
        state.open()
        state.study = make_study(options, resumed=len(state.trials))
        with launcher:
            try:
                state.rebuild()
                state.loop(env, composer, digests)
            finally:
                launcher.wait_uploads()
                state.write_index()
        if state.error is not None:
            raise state.error
        return state.result()


class _State:
    """One submission of a search: the trials, the study, the runs in flight."""

    def __init__(self, launcher: Launcher, sweep_id: str, args: Sequence[str], space: Space,
                 options: SearchOptions, distributions: dict[str, Any]) -> None:
        self.launcher = launcher
        self.sweep_id = sweep_id
        self.args = tuple(args)
        self.space = space
        self.options = options
        self.study: Any = None  # made once the document says how many trials it holds
        self.distributions = distributions
        self.trials: list[Trial] = []
        self.records: dict[str, RunRecord] = {}
        self.earlier: set[str] = set()
        self.queue: list[Trial] = []
        #: A trial asked and prepared (image built and loaded) while the slots were
        #: full, numbered and submitted as soon as one frees (see :meth:`_can_prefetch`).
        self.ready: list[tuple[Job, _Flight]] = []
        #: Trials running, and those another submitter of the search runs (waited for).
        self.flights: InFlight[_Flight] = InFlight(launcher, poll_s=POLL_S)
        self.error: OrchestratorError | None = None
        self.pruning = options.pruner is not None
        self.created_at = now_iso()
        self.env_uploaded = False

    # -- the document ---------------------------------------------------------------------

    def open(self) -> None:
        runs = self.launcher.runs
        try:
            doc = runs.read_sweep(self.sweep_id)
        except NotFound:
            doc = None
        if doc is not None:
            self.created_at = doc.created_at or self.created_at
            # The document's list first: a search stored before trials were objects
            self._merge((doc.search or {}).get("trials", []))
            overrides = {e.run_id: e.overrides for e in doc.runs}
            for trial in self.trials:
                trial.overrides = trial.overrides or overrides.get(trial.run_id, ())
        self._merge(runs.read_trials(self.sweep_id), replace=True)
        runs.write_sweep(self.doc())  # kept if it exists; opens the sweep either way

    def _merge(self, items: Any, *, replace: bool = False) -> bool:
        """Add trials read from the store; True when any was new to this submission."""
        known = {trial.number: i for i, trial in enumerate(self.trials)}
        added = False
        for item in items:
            trial = Trial.from_json(item)
            if trial is None:
                continue
            if trial.number not in known:
                known[trial.number] = len(self.trials)
                self.trials.append(trial)
                added = True
            elif replace:
                self.trials[known[trial.number]] = trial
        self.trials.sort(key=lambda t: t.number)
        return added

    def _refresh(self) -> bool:
        """Trials other submitters of this search created since we last looked."""
        return self._merge(self.launcher.runs.read_trials(self.sweep_id,
                                                   [t.number for t in self.trials]))

    def _publish(self) -> None:
        """Rewrite the document until no trial object is missing from what we wrote."""
        while True:
            self.launcher.runs.update_sweep(self.doc())
            if not self._refresh():
                return

    def _number(self, trial: Trial) -> Trial | None:
        """Create ``trial``'s object under the first free number and return it; or the
        trial another submitter made of the same point meanwhile (with the same seed and
        history, two submitters ask the same points); None when every number up to
        --trials is taken."""
        runs = self.launcher.runs
        while True:
            trial.number = 1 + max((t.number for t in self.trials), default=-1)
            if trial.number >= self.options.trials:
                return None
            if runs.create_trial(self.sweep_id, trial.number, trial.to_object()):
                self.trials.append(trial)
                return trial
            self._refresh()
            same = [t for t in self.trials if t.run_id == trial.run_id]
            if same:
                return same[0]

    def doc(self) -> SweepDoc:
        entries: dict[str, SweepEntry] = {}
        for trial in self.trials:
            if trial.run_id and trial.run_id not in entries:
                entries[trial.run_id] = SweepEntry(trial.run_id, trial.overrides)
        search = {
            **self.options.to_json(),
            "space": self.space.to_json(),
            "trials": [t.to_json() for t in self.trials if t.run_id],
        }
        return SweepDoc(sweep_id=self.sweep_id, project=self.launcher.project.name,
                        created_at=self.created_at, args=self.args,
                        runs=tuple(entries.values()), search=search)

    # -- rebuilding the study ---------------------------------------------------------------

    def rebuild(self) -> None:
        ids = list(dict.fromkeys(t.run_id for t in self.trials if t.run_id))
        found = dict(zip(ids, self.launcher.runs.read_runs(ids), strict=True))
        retried: set[str] = set()
        for trial in self.trials:
            record = found.get(trial.run_id)
            if (record is not None and trial.run_id not in retried
                    and not self.launcher.retry(record)):
                self.records[trial.run_id] = record
                self.earlier.add(trial.run_id)
                self.launcher.progress("skipped", trial.run_id, record)
                curve = self._curve(record)
                if record.status is RunStatus.PRUNED:
                    curve = pruned_curve(self.study, curve)
                self.study.add_trial(frozen_trial(trial.params, self.distributions, record,
                                                  self.options.objectives, curve))
            else:
                if record is not None:
                    retried.add(trial.run_id)
                self.queue.append(trial)

    def _curve(self, record: RunRecord) -> dict[int, float]:
        if not self.pruning or record.status not in (RunStatus.SUCCEEDED, RunStatus.PRUNED):
            return {}
        try:
            jsonl = self.launcher.runs.read_file(record.run_id, "metrics.jsonl")
        except NotFound:
            return {}
        return step_values(jsonl, self.options.objectives[0].metric)

    # -- the loop ---------------------------------------------------------------------------

    def _can_ask(self) -> bool:
        if self.launcher.stop.draining or self.error is not None:
            return False
        if len(self.flights) >= self.options.jobs:
            return False
        return bool(self.ready or self.queue) or len(self.trials) < self.options.trials

    def _can_prefetch(self) -> bool:
        """Whether the next trial can be prepared now, while every slot is busy: its
        point must not depend on the results still running (TPE's start-up), so asking
        it early draws the point it would draw later, and only its start is earlier."""
        if self.ready or self.queue or self.launcher.stop.draining or self.error is not None:
            return False
        if len(self.flights) < self.options.jobs or len(self.trials) >= self.options.trials:
            return False  # (a prepared trial is numbered when it starts: not counted yet)
        return len(self.study.trials) < independent_trials(self.options)

    def loop(self, env: Environment, composer: configmod.Composer,
             digests: dict[str, str]) -> None:
        while True:
            while self._can_ask():
                self._start_next(env, composer, digests)
            if not self.flights:
                if self._can_ask():
                    continue
                return
            if self._can_prefetch():
                # The image load of trial N+1 overlaps trial N's container instead of
                # following it (a sequential search otherwise pays it on every trial).
                self._prefetch(env, composer, digests)
                continue
            for flight, record in self.flights.collect(POLL_S if self.pruning else None):
                if record is None:  # not started, or another submitter's and we stop
                    self._abandon(flight)
                else:
                    self._done(flight, record)
            if self.pruning:
                self._prune()

    def _start_next(self, env: Environment, composer: configmod.Composer,
                    digests: dict[str, str]) -> None:
        if self.ready:
            job, flight = self.ready.pop(0)
        else:
            flight = self._ask(env, composer, digests)
            job = None
        claimed = self._claim(flight)
        if claimed is None:
            return
        if job is None:
            job = self._prepare(env, claimed)
        self.flights.submit(job, claimed)

    def _prefetch(self, env: Environment, composer: configmod.Composer,
                  digests: dict[str, str]) -> None:
        """Ask the next trial and build and load its run's image now; it is numbered
        (and listed in the search's document) only when it starts."""
        flight = self._ask(env, composer, digests)
        self.ready.append((self._prepare(env, flight), flight))

    def _ask(self, env: Environment, composer: configmod.Composer,
             digests: dict[str, str]) -> _Flight:
        """The next trial asked of the study (or the queue's next), composed and planned."""
        if self.queue:
            trial = self.queue.pop(0)
            self.study.enqueue_trial(trial.params, skip_if_exists=False)
            asked = self.study.ask(self.distributions)
        else:
            asked = self.study.ask(self.distributions)
            trial = Trial(-1, dict(asked.params))  # numbered once its run id is known
        ((point, cfg),) = compose_each(composer, [self.space.point(asked.params)],
                                       self.launcher.project.overrides)
        (spec,) = plan(self.launcher.project, env, [(point, cfg)], self.args, digests).runs
        if trial.run_id and trial.run_id != spec.run_id:
            log.warning("trial %d composes to run %s now, not %s", trial.number, spec.run_id,
                        trial.run_id)
        if not trial.run_id:
            trial.overrides = point
        return _Flight(trial, asked, spec)

    def _claim(self, flight: _Flight) -> _Flight | None:
        """Number an asked trial; the flight to run, or None when it needs no run of its
        own (past --trials, its point already run, or in flight already)."""
        trial, asked, spec = flight.trial, flight.asked, flight.spec
        if not trial.run_id:
            trial.run_id = spec.run_id
            numbered = self._number(trial)
            if numbered is None:  # others took the last numbers meanwhile
                from .study import _optuna

                self.study.tell(asked, state=_optuna().trial.TrialState.FAIL)
                return None
            if numbered is not trial:
                # Another submitter's trial: its run is awaited below (the claim makes it
                # run once), and from now on this submitter draws points of its own.
                self.study.sampler.reseed_rng()
                flight = _Flight(numbered, asked, spec)
            else:
                self._publish()
        asked.set_user_attr("run_id", spec.run_id)
        known = self.records.get(spec.run_id)
        if known is not None:  # the sampler asked for a point already run: its result stands
            self._tell(asked, known, None)
            return None
        for running in self.flights.notes():
            if running.spec.run_id == spec.run_id:
                running.followers.append(asked)
                return None
        return flight

    def _prepare(self, env: Environment, flight: _Flight) -> Job:
        """Stage the trial's inputs, build and load its run's image: its job."""
        spec = flight.spec
        self.launcher.progress("queued", spec.run_id, None)
        self.launcher.stage([spec])
        if not self.env_uploaded:
            self.launcher.protect_environment(self.sweep_id, env)
            self.launcher.upload_environment(env)
            self.env_uploaded = True
        (job,) = self.launcher.prepare(env, self.sweep_id, [spec])
        if not self.launcher.backend.shares_daemon:
            self.launcher.wait_uploads()
        return job

    def _done(self, flight: _Flight, record: RunRecord) -> None:
        self.records[record.run_id] = record
        if self.pruning and record.status in (RunStatus.SUCCEEDED, RunStatus.PRUNED):
            curve = self._curve(record)
            if not curve and record.status is RunStatus.SUCCEEDED:
                log.warning("--pruner %s: run %s wrote no step metric %r to metrics.jsonl; "
                            "pruning is off for this search", self.options.pruner,
                            record.run_id, self.options.objectives[0].metric)
                self.pruning = False
            if record.status is RunStatus.PRUNED:
                curve = pruned_curve(self.study, curve)
            for step, value in sorted(curve.items()):
                if step not in flight.reported:
                    flight.asked.report(value, step)
                    flight.reported.add(step)
        self._tell(flight.asked, record, flight)
        for follower in flight.followers:
            self._tell(follower, record, None)

    def _tell(self, asked: Any, record: RunRecord, flight: _Flight | None) -> None:
        from .study import _optuna

        state = _optuna().trial.TrialState
        if record.status is RunStatus.SUCCEEDED:
            try:
                values = values_of(record, self.options.objectives)
            except MissingObjective as exc:
                self.study.tell(asked, state=state.FAIL)
                if self.error is None:
                    self.error = exc
                    self.launcher.stop.drain()
                return
            self.study.tell(asked, values if len(values) > 1 else values[0])
        elif record.status is RunStatus.PRUNED:
            self.study.tell(asked, state=state.PRUNED)
        else:
            self.study.tell(asked, state=state.FAIL)

    def _abandon(self, flight: _Flight) -> None:
        from .study import _optuna

        state = _optuna().trial.TrialState
        for asked in [flight.asked, *flight.followers]:
            self.study.tell(asked, state=state.FAIL)

    def _prune(self) -> None:
        metric = self.options.objectives[0].metric
        for _, flight in self.flights.running():
            if flight.stop_sent:
                continue
            live = self.launcher.runs.read_live(flight.spec.run_id)
            if not live:
                continue
            step, value = live.get("step"), (live.get("metrics") or {}).get(metric)
            if not isinstance(step, int | float) or not isinstance(value, int | float):
                continue
            if step == flight.last_step or int(step) in flight.reported:
                continue
            flight.last_step = step
            if replayable(self.study.pruner):
                flight.seen[int(step)] = float(value)
                condemned = would_prune(self.study, flight.seen)
            else:
                flight.reported.add(int(step))
                flight.asked.report(float(value), int(step))
                condemned = flight.asked.should_prune()
            if condemned:
                reason = (f"pruned by the {self.options.pruner} pruner at step {int(step)} "
                          f"({metric}={value:g})")
                self.launcher.runs.request_stop(flight.spec.run_id, reason, self.launcher.owner)
                flight.stop_sent = True

    # -- the outcome ------------------------------------------------------------------------

    def write_index(self) -> None:
        """The sweep's index, with this submission's view of the document in it; written
        again while other submitters add trials, so the last index written lists every
        trial even when it lands after a concurrent submitter's."""
        while True:
            self.launcher.runs.write_sweep_index(self.sweep_id, self.stored(), self.doc())
            if not self._refresh():
                return

    def stored(self) -> list[RunRecord]:
        """Every finished trial's record, other submitters' too: the index written from
        them is what readers trust once no submission has the sweep open."""
        self._publish()
        ids = list(dict.fromkeys(t.run_id for t in self.trials if t.run_id))
        missing = [run_id for run_id in ids if run_id not in self.records]
        for run_id, record in zip(missing, self.launcher.runs.read_runs(missing), strict=True):
            if record is not None:
                self.records[run_id] = record
        return [self.records[run_id] for run_id in ids if run_id in self.records]

    def result(self) -> SweepResult:
        reported = []
        overrides = {t.run_id: t.overrides for t in self.trials}
        for run_id in dict.fromkeys(t.run_id for t in self.trials if t.run_id):
            record = self.records.get(run_id)
            if record is None:  # never started (the search was stopped), or another
                # submitter of the same search runs it still: nothing stored yet
                plan_ = RunPlan(run_id=run_id, sweep_id=self.sweep_id,
                                project=self.launcher.project.name, overrides=overrides[run_id])
                live = self.launcher.runs.claims.is_live(run_id, self.launcher.settings.lease_s)
                pending = RunStatus.RUNNING if live else RunStatus.QUEUED
                reported.append(SweepRun(RunRecord.finish(plan_, status=pending), pending.value))
                continue
            earlier = run_id in self.earlier
            status = "skipped" if earlier and record.status in (
                RunStatus.SUCCEEDED, RunStatus.PRUNED) else record.status.value
            reported.append(SweepRun(record, status))
        return SweepResult(self.sweep_id, reported, stopped=self.launcher.stop.draining
                           and self.error is None)

