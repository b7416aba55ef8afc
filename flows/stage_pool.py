"""Run a build's shard units on Ray: every stage at once, each on workers of its own.

Each stage gets a *lane*: long-lived Ray actors (:class:`~dancegen.tasks.shard.StageWorker`,
set up once each: body model, GL context) fed one unit at a time, or one Ray task per unit
(stages with neither a set-up nor a GPU, or ``ray.stages.<stage>.actors: 0``). Lanes run
side by side, so the CPU stages overlap the GPU ones, each within ``ray.stages.<stage>``
resources; a stage's units in flight are bounded by its workers (backpressure), and the task
units of all lanes by ``ray.max_in_flight`` (an actor is always given work when it is idle:
it holds its resources either way, and queued tasks may be waiting for exactly those).

A unit that runs past ``timeout_s`` has its worker stopped (a hung GL call or S3 read cannot
be interrupted otherwise) and fails with :class:`UnitTimeout`; a dead worker is replaced.
Either is retried up to ``ray.retries`` times, bad input never. Outcomes come back as they
finish; the flow records them in the store.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from dancegen.config import DancegenConfig, StageResources
from dancegen.errors import ConfigError, UnitTimeout
from dancegen.tasks.retries import is_deterministic
from dancegen.tasks.shard import ShardResult, ShardUnit, StageWorker, build_shard_now
from dancegen.tasks.stages import STAGES, Stage

Outcome = tuple[ShardUnit, ShardResult | BaseException]
POLL_S = 0.5          # how often timeouts are checked while nothing finishes
MAX_START_FAILURES = 3  # workers of a stage failing to start in a row: the stage cannot run


def workers_that_fit(resources: StageResources) -> int:
    """How many workers with ``resources`` the cluster's live nodes hold at once."""
    need = {"CPU": resources.num_cpus, "GPU": resources.num_gpus,
            "memory": (resources.memory_mb or 0) * 1024 * 1024}
    need = {name: amount for name, amount in need.items() if amount > 0}
    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        # a small epsilon: 1.0 / 0.1 is 9.999... in floating point
        total += min((int(have.get(name, 0) / amount + 1e-6) for name, amount in need.items()),
                     default=1 << 20)
    return total


def _actor_options(resources: StageResources) -> dict[str, Any]:
    options = {k: v for k, v in resources.ray_options().items() if k != "max_calls"}
    # the pool replaces dead workers itself and retries their unit once per policy
    return {**options, "max_restarts": 0, "max_task_retries": 0}


def _task_options(resources: StageResources) -> dict[str, Any]:
    # Ray's own default: a GPU task gets a fresh process per task (max_calls=1)
    return {k: v for k, v in resources.ray_options().items() if k != "max_calls"}


def _unwrap(error: BaseException) -> BaseException:
    """The exception the stage raised, not Ray's wrapper with the remote traceback."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        return error.cause
    return error


@dataclass
class _Running:
    unit: ShardUnit
    attempt: int          # retries already spent on the unit
    started: float        # monotonic; a unit is only timed once a ready worker runs it
    actor: Any | None     # its actor, None for a Ray task


class _Lane:
    """One stage's pending units, its workers and what runs on them."""

    def __init__(self, stage: Stage, units: list[ShardUnit], config: DancegenConfig,
                 logger: logging.Logger) -> None:
        self.stage, self.config, self.logger = stage, config, logger
        self.resources = config.ray.resources(stage.name)
        self.pending: deque[tuple[ShardUnit, int]] = deque((unit, 0) for unit in units)
        self.running: dict[Any, _Running] = {}
        self.starting: dict[Any, Any] = {}   # ready() ref -> actor
        self.idle: list[Any] = []
        self.actors = 0                        # alive: starting, idle or running a unit
        self.start_failures = 0
        # actors buy one set-up per worker; a stage without set-up or GPU gains nothing from
        # them and would pay a process start per build, so by default it runs as Ray tasks
        # on Ray's pooled (reused) workers
        self.per_task = self.resources.actors == 0 or (
            self.resources.actors is None and stage.setup is None
            and self.resources.num_gpus == 0)
        self.size = min(len(units), config.ray.max_in_flight, self._workers())
        if self.per_task:
            self._task = ray.remote(**_task_options(self.resources))(build_shard_now)
        else:
            self._actor_class = ray.remote(StageWorker).options(**_actor_options(self.resources))

    def _workers(self) -> int:
        if self.resources.actors:  # as configured
            return self.resources.actors
        fit = workers_that_fit(self.resources)  # actors, or Ray tasks running at once
        if fit:
            return fit
        where = f"ray.stages.{self.stage.name}"
        if self.config.ray.address is None:  # a local Ray never grows
            raise ConfigError(f"{where} asks for {self.resources.ray_options()} per worker; "
                              f"no node of the local Ray has that ({ray.cluster_resources()})")
        self.logger.warning("%s: no node has %s free now; waiting for the autoscaler", where,
                            self.resources.ray_options())
        return 1

    @property
    def busy(self) -> bool:
        """Units wait or run."""
        return bool(self.pending or self.running)

    def refs(self) -> list[Any]:
        """What the pool waits on: workers coming up and units running."""
        return [*self.starting, *self.running]

    def owns(self, ref: Any) -> bool:
        """Whether ``ref`` is one of this lane's."""
        return ref in self.starting or ref in self.running

    def submit_one(self) -> bool:
        """Start one pending unit if a worker is free; False when none can start now."""
        if not self.pending:
            return False
        if self.per_task:
            # a second unit per worker waits at the raylet, so that a worker that finishes
            # starts the next at once instead of waiting for the flow to notice (cheap units
            # would otherwise idle the workers for a round trip each); its timeout counts from
            # submission
            if len(self.running) >= 2 * self.size:
                return False
            unit, attempt = self.pending.popleft()
            ref = self._task.options(name="build-shard").remote(unit, self.config, self.stage)
            self.running[ref] = _Running(unit, attempt, time.monotonic(), None)
            return True
        self._grow()
        if not self.idle:
            return False
        actor = self.idle.pop()
        unit, attempt = self.pending.popleft()
        self.running[actor.build_shard.remote(unit, self.config)] = _Running(
            unit, attempt, time.monotonic(), actor)
        return True

    def _grow(self) -> None:
        wanted = min(self.size, len(self.pending) + len(self.running))
        while self.actors < wanted:
            actor = self._actor_class.remote(self.stage)
            self.starting[actor.ready.remote()] = actor
            self.actors += 1

    def complete(self, ref: Any) -> list[Outcome]:
        """Take a finished ref: a worker that came up, or a unit's outcome."""
        if ref in self.starting:
            actor = self.starting.pop(ref)
            try:
                ray.get(ref)
            except Exception as error:
                self.actors -= 1
                self.start_failures += 1
                return self._start_failed(_unwrap(error))
            self.start_failures = 0
            self.idle.append(actor)
            return []
        run = self.running.pop(ref)
        try:
            result = ray.get(ref)
        except Exception as error:
            error = _unwrap(error)
            if isinstance(error, RayActorError):
                self.actors -= 1  # the worker died with the unit: a new one replaces it
            elif run.actor is not None:
                self.idle.append(run.actor)
            return self._failed(run, error)
        if run.actor is not None:
            self.idle.append(run.actor)
        return [(run.unit, result)]

    def expire(self, now: float) -> list[Outcome]:
        """Fail the units that ran past the stage's timeout; stop their workers."""
        outcomes = []
        for ref, run in list(self.running.items()):
            if now - run.started <= self.resources.timeout_s:
                continue
            del self.running[ref]
            if run.actor is not None:
                ray.kill(run.actor)
                self.actors -= 1
            else:
                ray.cancel(ref, force=True)
            outcomes += self._failed(run, UnitTimeout(
                f"{run.unit.unit_id} ran past its timeout of {self.resources.timeout_s:g} s "
                f"(ray.stages.{self.stage.name}.timeout_s); its worker was stopped"))
        return outcomes

    def _failed(self, run: _Running, error: BaseException) -> list[Outcome]:
        if not is_deterministic(error) and run.attempt < self.config.ray.retries:
            self.logger.warning("%s failed (%s: %s); retrying (%d of %d)", run.unit.unit_id,
                                type(error).__name__, error, run.attempt + 1,
                                self.config.ray.retries)
            self.pending.appendleft((run.unit, run.attempt + 1))
            return []
        return [(run.unit, error)]

    def _start_failed(self, error: BaseException) -> list[Outcome]:
        self.logger.warning("a %s worker failed to start: %s: %s", self.stage.name,
                            type(error).__name__, error)
        if self.start_failures < MAX_START_FAILURES or self.actors:
            return []
        failed = [(unit, error) for unit, _ in self.pending]  # nothing can run them
        self.pending.clear()
        return failed

    def retire_idle(self) -> None:
        """Stop the workers that no unit is left for: their resources go to other stages."""
        if self.pending:
            return
        for actor in [*self.idle, *self.starting.values()]:
            ray.kill(actor)
        self.actors -= len(self.idle) + len(self.starting)
        self.idle.clear()
        self.starting.clear()

    def close(self) -> None:
        """Stop every worker of the lane (the build ended or stopped)."""
        for ref, run in self.running.items():
            if run.actor is None:
                ray.cancel(ref, force=True)
            else:
                ray.kill(run.actor)
        for actor in [*self.idle, *self.starting.values()]:
            ray.kill(actor)
        self.running.clear()
        self.idle.clear()
        self.starting.clear()
        self.actors = 0


def run_stage_units(units: list[ShardUnit], config: DancegenConfig,
                    logger: logging.Logger) -> Iterator[Outcome]:
    """Run every unit on its stage's lane; yield (unit, result or error) as each finishes.

    Needs an initialised Ray (the flow's task runner starts it). Closing the iterator early
    stops every worker it started.
    """
    if not ray.is_initialized():
        raise RuntimeError("run_stage_units needs a running Ray: run it inside a flow whose "
                           "task runner is a RayTaskRunner, or call ray.init first")
    by_stage: dict[str, list[ShardUnit]] = {}
    for unit in units:
        by_stage.setdefault(unit.stage, []).append(unit)
    lanes: list[_Lane] = []
    try:
        for name, stage_units in by_stage.items():
            try:
                lanes.append(_Lane(STAGES[name], stage_units, config, logger))
            except ConfigError as error:  # this stage cannot run here; the others can
                yield from ((unit, error) for unit in stage_units)
        while any(lane.busy for lane in lanes):
            _fill(lanes, config.ray.max_in_flight)
            refs = [ref for lane in lanes for ref in lane.refs()]
            finished = ray.wait(refs, num_returns=1, timeout=POLL_S)[0] if refs else []
            if finished:  # and whatever else is done by now, in one call
                finished = ray.wait(refs, num_returns=len(refs), timeout=0)[0]
            for ref in finished:
                yield from next(lane for lane in lanes if lane.owns(ref)).complete(ref)
            now = time.monotonic()
            for lane in lanes:
                yield from lane.expire(now)
                lane.retire_idle()
            if not refs:
                time.sleep(POLL_S)  # nothing to wait on: workers are being replaced
    finally:
        for lane in lanes:
            lane.close()


def _fill(lanes: list[_Lane], window: int) -> None:
    """Give every idle actor a unit, then start task units round-robin over the lanes while
    the window allows. Actors are outside the window: an actor holds its resources busy or
    not, so one left idle while queued tasks fill the window (tasks that may be waiting for
    exactly those resources) could stall the build for good."""
    for lane in lanes:
        if not lane.per_task:
            while lane.submit_one():
                pass
    budget = window - sum(len(lane.running) for lane in lanes if lane.per_task)
    started = True
    while budget > 0 and started:
        started = False
        for lane in lanes:
            if lane.per_task and budget > 0 and lane.submit_one():
                budget -= 1
                started = True
