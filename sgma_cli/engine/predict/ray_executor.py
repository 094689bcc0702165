"""Chunks of a region on a Ray cluster: :class:`RayExecutor`, a ``ChunkExecutor``.

One Ray actor per worker (one per GPU, or one per ``cpus_per_worker`` CPUs) builds its
state once with ``setup`` (loads the checkpoint) at its first chunk and then runs
``work(state, task)`` for every chunk it is handed. The driver keeps one chunk in flight
per actor and hands the next chunk to whichever actor finishes first, so a slow node
takes fewer chunks. Tasks and results are small; the actors read the sources and write
their chunk files themselves, so nothing large passes through the driver.

Failures:

* an :class:`~sgma_cli.errors.SgmaError` raised by ``work`` is final: ``on_failure``, no
  retry (bad input does not improve);
* a worker process that dies (killed, out of memory, its node lost) is replaced by a new
  actor and its chunk runs again, up to ``max_retries`` times per chunk; every rerun is
  counted in :attr:`RayExecutor.retries` and reported through ``on_retry``;
* an error in ``setup``, or any other exception in ``work`` (a bug), stops the run and is
  raised from :meth:`RayExecutor.run` with the worker's traceback as a note;
* actors that die before they answer, ``max_retries + 1`` times in a row (sgma not
  installed on the nodes), stop the run with one line.

Each actor moves into the driver's working directory when its node has that folder, so
relative paths mean the same on a shared project folder.

Where the cluster comes from (``address``):

* ``"auto"``: the cluster named by ``RAY_ADDRESS``, else the latest one started on this
  machine with ``ray start``, else a local cluster started for this run (on this
  machine, shut down at the end);
* ``"local"``: always a local cluster started for this run;
* ``"HOST:PORT"`` (a head node's GCS address, 6379 by default): that cluster only. An
  address where no gRPC server answers within ``connect_timeout`` seconds is one
  :class:`~sgma_cli.errors.UsageError` line, before Ray is asked (Ray itself would wait
  for minutes).

If Ray is already initialised in this process (a test, a notebook), that connection is
used and left open. Ray is imported here only, inside functions: without the optional
extra ``sgma-cli[ray]`` nothing else in sgma needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from sgma_cli.errors import SgmaError, UsageError

__all__ = [
    "RAY_EXTRA",
    "FORWARDED_ENV_PREFIXES",
    "RayExecutor",
    "forwarded_environment",
    "require_ray",
]

#: How to install what ``--ray`` needs.
RAY_EXTRA = "pip install 'sgma-cli[ray]'"
#: Environment variables of the driver passed on to the workers of a cluster that this run
#: did not start (a local cluster inherits the driver's environment anyway): object
#: storage credentials and GDAL's network options, so ``s3://``/``gs://`` sources open.
FORWARDED_ENV_PREFIXES = (
    "AWS_",
    "GS_",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_",
    "GDAL_HTTP_",
    "CPL_VSIL_",
)
#: Port of a head node's GCS when an address gives none (``ray start --head`` default),
#: and of a Ray Client server (``ray://``).
_GCS_PORT = 6379
_CLIENT_PORT = 10001


def require_ray(purpose: str = "--ray") -> ModuleType:
    """Import Ray or raise one :class:`UsageError` line (exit 2) naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            f"{purpose} needs the optional package ray, not installed; "
            f"install the ray extra: {RAY_EXTRA}"
        ) from None
    return ray


def forwarded_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default: this process) that workers get, by prefix."""
    environ = os.environ if environ is None else environ
    return {
        key: value
        for key, value in environ.items()
        if key.startswith(FORWARDED_ENV_PREFIXES) and value
    }


def _host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of a ``HOST[:PORT]`` or ``ray://HOST[:PORT]`` address."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        host, port = rest, str(_CLIENT_PORT if client else _GCS_PORT)
    return host.strip("[]") or "127.0.0.1", int(port)


#: What an HTTP/2 client sends first; a gRPC server (Ray's GCS, a Ray Client server)
#: answers with a SETTINGS frame (type 4) without waiting for more.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _first_line(error: BaseException) -> str:
    """The first line of an error's text, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _probe(address: str, timeout: float) -> str | None:
    """None when a gRPC server (as Ray's are) answers at ``address``, else the reason.

    Ray's own connection attempt waits for minutes at an address where nothing, or
    something else, listens; this check takes at most ``timeout`` seconds.
    """
    try:
        host, port = _host_port(address)
    except ValueError:
        return "not HOST:PORT"
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_PREFACE)
            header = b""
            while len(header) < 9:
                more = conn.recv(9 - len(header))
                if not more:
                    break
                header += more
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as error:
        return error.strerror or type(error).__name__
    if len(header) < 9 or header[3] != 4:
        return "something answers there, but not a Ray (gRPC) server"
    return None


def _latest_local_cluster() -> str | None:
    """The GCS address of the latest ``ray start`` on this machine, if Ray recorded one."""
    try:
        from ray._private.services import find_bootstrap_address

        found = find_bootstrap_address(None)
    except Exception:  # a private helper of Ray: without it, no auto-detection
        return None
    return str(found) if found else None


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else an equivalent that does (same message)."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        kind = SgmaError if isinstance(error, SgmaError) else RuntimeError
        substitute = kind(f"{type(error).__name__}: {error}")
        if isinstance(error, SgmaError):
            substitute.exit_code = error.exit_code
        return substitute
    return error


@dataclass(frozen=True)
class _Outcome:
    """What an actor sends back for one task: ``value``, or an error and its traceback."""

    kind: str  # "ok", "failed" (SgmaError in work), "setup" (error in setup), "bug"
    value: Any = None
    error: BaseException | None = None
    trace: str = ""


class _Worker:
    """The actor: ``setup`` once (at the first task), then ``work`` per task.

    It moves into the driver's working directory ``cwd`` when its node has that folder (a
    shared file system mounted at the same path), so relative paths in tasks mean there
    what they mean to the driver; elsewhere it stays where Ray started it.
    """

    def __init__(
        self, setup: Callable[[], Any], work: Callable[[Any, Any], Any], cwd: str = ""
    ) -> None:
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        self._setup = setup
        self._work = work
        self._ready = False
        self._state: Any = None

    def ping(self) -> int:
        """Answer once the actor is up (its process id): then it can take tasks."""
        return os.getpid()

    def run(self, task: Any) -> _Outcome:
        """Compute one task; errors come back as outcomes, never as Ray task errors."""
        if not self._ready:
            try:
                self._state = self._setup()
            except BaseException as error:
                return _Outcome("setup", error=_portable(error), trace=traceback.format_exc())
            self._ready = True
        try:
            return _Outcome("ok", value=self._work(self._state, task))
        except SgmaError as error:
            return _Outcome("failed", error=_portable(error))
        except Exception as error:
            return _Outcome("bug", error=_portable(error), trace=traceback.format_exc())


def _raise_remote(outcome: _Outcome) -> None:
    """Raise an actor's setup error or bug on the driver, its remote traceback as a note."""
    error = outcome.error or RuntimeError("a Ray worker failed without an error")
    if outcome.trace and not isinstance(error, SgmaError):
        error.add_note(f"in the Ray worker:\n{outcome.trace.rstrip()}")
    raise error


class RayExecutor:
    """Run the chunks of a region on a Ray cluster, one actor per worker.

    Args:
        address: ``"auto"``, ``"local"`` or a cluster address (see the module docstring).
        workers: how many actors; default: as many as the cluster's nodes hold at
            ``cpus_per_worker``/``gpus_per_worker`` each, at most one per task.
        cpus_per_worker: CPUs each actor reserves (Ray sets its thread count from it).
        gpus_per_worker: GPUs each actor reserves; ``None``: one when the cluster has
            GPUs, else none (a CPU worker).
        max_retries: how many times a chunk runs again after its worker process died.
        connect_timeout: seconds to wait for an explicit address to answer.
        env: variables set in every actor's environment; default: those of this process
            named by :data:`FORWARDED_ENV_PREFIXES`, for clusters this run did not start.
        on_retry: called on the driver with a task and its attempt number (2, 3, ...)
            when the task is handed out again after its worker died.
        on_start: called on the driver with this executor once the cluster is joined and
            the number of workers known (:attr:`cluster`, :attr:`actors`,
            :attr:`gpus_each`), before any worker starts.
    """

    def __init__(  # noqa: PLR0913 - keyword-only options, each with a default
        self,
        address: str = "auto",
        *,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float | None = None,
        max_retries: int = 3,
        connect_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
        on_retry: Callable[[Any, int], None] | None = None,
        on_start: Callable[[RayExecutor], None] | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"workers {workers}: give at least 1")
        if cpus_per_worker <= 0:
            raise UsageError(f"--cpus-per-worker {cpus_per_worker:g}: give a number above 0")
        if gpus_per_worker is not None and gpus_per_worker < 0:
            raise UsageError(f"gpus per worker {gpus_per_worker:g}: give 0 or more")
        if max_retries < 0:
            raise UsageError(f"max retries {max_retries}: give 0 or more")
        self.address = address.strip() or "auto"
        self.workers = workers
        self.cpus_per_worker = float(cpus_per_worker)
        self.gpus_per_worker = gpus_per_worker
        self.max_retries = max_retries
        self.connect_timeout = connect_timeout
        self.env = dict(env) if env is not None else None
        self.on_retry = on_retry
        self.on_start = on_start
        #: Chunks handed out again after their worker died, over this executor's runs.
        self.retries = 0
        #: Where the last run ran: the cluster address, or "local" for one it started.
        self.cluster: str | None = None
        #: Actors (workers) the last run used at once, and their GPUs each.
        self.actors = 0
        self.gpus_each = 0.0

    # -- the cluster -------------------------------------------------------------------

    def _target(self) -> tuple[str | None, str]:
        """The address to join (None: start a local cluster) and where it came from."""
        if self.address == "local":
            return None, "--ray local"
        if self.address != "auto":
            return self.address, f"--ray {self.address}"
        target = os.environ.get("RAY_ADDRESS") or None
        if target is not None and target != "auto":
            return target, "RAY_ADDRESS"
        found = _latest_local_cluster()
        if found is None and target == "auto":
            raise UsageError(
                "RAY_ADDRESS is 'auto' but no cluster was started on this machine with "
                "`ray start`; give the head node's address HOST:PORT"
            )
        if found is None:
            return None, "--ray auto"
        return found, "the cluster of the latest `ray start` on this machine"

    def _check_reachable(self, target: str, origin: str) -> None:
        reason = _probe(target, self.connect_timeout)
        if reason is not None:
            raise UsageError(
                f"{origin}: no Ray cluster answers at {target} ({reason}); start one "
                "(`ray start --head`) or give the head node's address HOST:PORT"
            )

    def check(self) -> None:
        """Fail early, in one line, on what :meth:`run` would fail on before any chunk.

        Ray not installed, or a cluster address where no Ray answers; nothing is started
        or joined, so a command can call this before it plans (and writes) anything.
        """
        ray = require_ray()
        if ray.is_initialized():
            return
        target, origin = self._target()
        if target is not None:
            self._check_reachable(target, origin)

    def _connect(self, ray: ModuleType) -> bool:
        """Connect to (or start) the cluster; True when this call must shut Ray down."""
        if ray.is_initialized():
            self.cluster = "this process's Ray"
            return False
        target, origin = self._target()
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if target is None:
            try:
                ray.init(address="local", include_dashboard=False, **quiet)
            except (ConnectionError, RuntimeError, ValueError, OSError) as error:
                raise SgmaError(
                    f"{origin}: could not start a local Ray cluster: {_first_line(error)}"
                ) from None
            self.cluster = "local"
            return True
        self._check_reachable(target, origin)
        try:
            ray.init(address=target, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UsageError(
                f"{origin}: could not join the Ray cluster at {target}: {_first_line(error)}"
            ) from None
        self.cluster = target
        if self.env is None:
            self.env = forwarded_environment()
        return True

    def _plan_workers(self, ray: ModuleType, tasks: int) -> tuple[int, float]:
        """How many actors to start and the GPUs each reserves, from the live nodes."""
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        gpus_each = self.gpus_per_worker
        if gpus_each is None:
            gpus_each = 1.0 if any(r.get("GPU", 0) >= 1 for r in nodes) else 0.0
        fits = 0
        for resources in nodes:
            by_cpu = int(resources.get("CPU", 0) // self.cpus_per_worker)
            by_gpu = int(resources.get("GPU", 0) // gpus_each) if gpus_each > 0 else by_cpu
            fits += min(by_cpu, by_gpu)
        if fits == 0 and self.workers is None:
            most_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
            most_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
            raise UsageError(
                f"no node of the Ray cluster ({self.cluster}) holds a worker of "
                f"{self.cpus_per_worker:g} CPU(s) and {gpus_each:g} GPU(s) (largest node: "
                f"{most_cpu:g} CPUs, {most_gpu:g} GPUs); lower --cpus-per-worker"
            )
        return max(1, min(self.workers or fits, tasks)), gpus_each

    # -- the run -----------------------------------------------------------------------

    def run(
        self,
        tasks: Sequence[Any],
        setup: Callable[[], Any],
        work: Callable[[Any, Any], Any],
        on_result: Callable[[Any, Any], None],
        on_failure: Callable[[Any, BaseException], None],
    ) -> None:
        """Run every task on the cluster; see ``ChunkExecutor.run``.

        Raises:
            UsageError: Ray is not installed, the address does not answer, or no node
                holds one worker.
            SgmaError: the workers die before they take a task, again and again (sgma
                not installed on the nodes, a node without the memory to start).
            BaseException: an error of ``setup``, or a non-sgma error of ``work`` (a bug).
        """
        ray = require_ray()
        if not tasks:
            return
        before = _sigterm_handler()
        owned = self._connect(ray)
        if owned:  # ray.init put its own SIGTERM handler in place: a crash report, an abort
            _set_sigterm(_exit_on_sigterm)
        actors: list[Any] = []
        try:
            count, gpus_each = self._plan_workers(ray, len(tasks))
            self.actors, self.gpus_each = count, gpus_each
            if self.on_start is not None:
                self.on_start(self)
            options: dict[str, Any] = {
                "num_cpus": self.cpus_per_worker,
                "num_gpus": gpus_each,
                "max_restarts": 0,  # a dead actor is replaced by a fresh one (_Dispatch)
                "max_task_retries": 0,
            }
            if self.env:
                options["runtime_env"] = {"env_vars": dict(self.env)}
            actor_class = ray.remote(_Worker).options(**options)

            def spawn() -> Any:
                actor = actor_class.remote(setup, work, os.getcwd())
                actors.append(actor)
                return actor

            with _without_worker_died_notices():
                _Dispatch(self, ray, tasks, spawn, on_result, on_failure).run(count)
        finally:
            for actor in actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # already gone, or the cluster went away
                    pass
            if owned:
                ray.shutdown()
                _set_sigterm(before)


def _sigterm_handler() -> Any:
    """This process's SIGTERM handler (None off the main thread: it cannot be changed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.getsignal(signal.SIGTERM)


def _set_sigterm(handler: Any) -> None:
    """Install ``handler`` for SIGTERM, on the main thread only."""
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a batch system's time limit, ``kill``): leave as for any other exit, so the
    workers are stopped and a cluster this run started is shut down; exit code 143."""
    raise SystemExit(128 + signum)


#: The start of the paragraph Ray's driver prints on stdout when a worker process dies;
#: :class:`RayExecutor` reports that itself (``on_retry``, ``on_failure``), in one line.
_WORKER_DIED_NOTICE = "A worker died or was killed while executing"


@contextlib.contextmanager
def _without_worker_died_notices() -> Iterator[None]:
    """Leave out Ray's worker-died paragraphs on stdout; other cluster notices still show.

    Ray prints them from a thread of the driver through ``print_to_stdstream`` (an
    internal function, looked up at each call); without it this does nothing.
    """
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        yield
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        yield
        return

    def filtered(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        lines = data.get("lines") or []
        if data.get("pid") == "raylet" and any(_WORKER_DIED_NOTICE in str(x) for x in lines):
            return
        original(data, *args, **kwargs)

    ray_worker.print_to_stdstream = filtered
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


def _died_reason(error: BaseException) -> str:
    """One line on why a Ray actor died: the last line that names an error, if any."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line.split(":")[0]]
    text = named[-1] if named else (lines[0] if lines else type(error).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


class _Dispatch:
    """One run's bookkeeping on the driver: actors starting, idle and busy; tasks to do.

    A new actor is first asked to answer (``ping``) and only then handed a task, so a
    task never waits behind an actor that is still being placed (or never will be, on an
    autoscaling cluster that cannot grow); each idle actor takes the next task.
    """

    def __init__(
        self,
        executor: RayExecutor,
        ray: ModuleType,
        tasks: Sequence[Any],
        spawn: Callable[[], Any],
        on_result: Callable[[Any, Any], None],
        on_failure: Callable[[Any, BaseException], None],
    ) -> None:
        from ray.exceptions import RayActorError, WorkerCrashedError

        self.executor, self.ray, self.tasks = executor, ray, tasks
        self.spawn, self.on_result, self.on_failure = spawn, on_result, on_failure
        self.died = (RayActorError, WorkerCrashedError)
        self.pending = deque(range(len(tasks)))
        self.attempts = [0] * len(tasks)
        self.starting: dict[Any, Any] = {}  # ping ref -> actor
        self.busy: dict[Any, tuple[Any, int]] = {}  # run ref -> (actor, task index)
        self.idle: list[Any] = []
        self.started = 0  # actors that answered
        self.stillborn = 0  # actors that died before answering, in a row

    def _start(self) -> None:
        actor = self.spawn()
        self.starting[actor.ping.remote()] = actor

    def _kill(self, actor: Any) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:
            pass

    def run(self, count: int) -> None:
        """Start ``count`` actors and run every task; see :meth:`RayExecutor.run`."""
        for _ in range(count):
            self._start()
        while self.pending or self.busy:
            while self.idle and self.pending:
                actor, index = self.idle.pop(), self.pending.popleft()
                self.attempts[index] += 1
                self.busy[actor.run.remote(self.tasks[index])] = (actor, index)
            (ref,), _ = self.ray.wait([*self.busy, *self.starting], num_returns=1)
            if ref in self.starting:
                self._answered(ref)
            else:
                self._finished(ref)

    def _answered(self, ref: Any) -> None:
        actor = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.died as error:
            self._kill(actor)
            self.stillborn += 1
            if self.stillborn > self.executor.max_retries:
                raise SgmaError(
                    f"the Ray workers die before they start ({self.stillborn} in a row): "
                    f"{_died_reason(error)}; is the same sgma-cli[ray] installed on every "
                    "node, with the memory for one worker?"
                ) from None
            self._start()
            return
        self.stillborn = 0
        self.started += 1
        self.idle.append(actor)

    def _finished(self, ref: Any) -> None:
        actor, index = self.busy.pop(ref)
        task = self.tasks[index]
        try:
            outcome: _Outcome = self.ray.get(ref)
        except self.died as error:
            self._kill(actor)
            self._start()
            attempts = self.attempts[index]
            if attempts > self.executor.max_retries:
                self.on_failure(
                    task,
                    SgmaError(
                        f"its worker process died on each of {attempts} attempts "
                        f"({_died_reason(error)})"
                    ),
                )
                return
            self.executor.retries += 1
            self.pending.appendleft(index)
            if self.executor.on_retry is not None:
                self.executor.on_retry(task, attempts + 1)
            return
        if outcome.kind == "ok":
            self.idle.append(actor)
            self.on_result(task, outcome.value)
        elif outcome.kind == "failed":
            self.idle.append(actor)
            self.on_failure(task, outcome.error or SgmaError("the chunk failed"))
        else:
            _raise_remote(outcome)
