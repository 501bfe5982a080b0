"""Independent tasks on local worker processes or a Dask cluster, results in task order.

:func:`map_tasks` is the one runner behind ``planner sweep`` (Monte Carlo chunks of a grid),
``planner simulate`` (one task per simulated plan) and ``planner risk --simulate K`` (one task
per replication). It calls ``fn(*task)`` (or ``fn(shared, *task)``) for every task and returns
the results **in task order**, whatever the order tasks finish in. A task's randomness must
be fixed by its arguments alone (a seed or a ``SeedSequence`` child chosen by the caller from
the task's index, never from the order of completion): then the results are bit-identical
whichever runner is used and however many workers it has.

Runners (``scheduler``):

* ``"serial"``: in this process, one task after another (no Dask).
* ``None``: ``n_workers`` local worker processes (a ``concurrent.futures`` process pool,
  closed afterwards; no Dask); serial when one worker or one task. ``n_workers=None`` is
  :func:`default_workers` (one per core, at most one per task). On Linux, when this process
  runs no other thread, the workers are forked (:func:`start_method`): they start in
  milliseconds with everything already imported, and ``shared`` reaches them without being
  pickled; otherwise they are started by ``forkserver`` (or ``spawn``) and ``shared`` is
  pickled once per worker. Each task's result is pickled back once.
* ``"tcp://host:port"`` (or ``tls://``): a running Dask scheduler; its workers need planner
  installed. An unreachable address raises :class:`SchedulerError`.
* ``client``: an existing ``distributed.Client`` (overrides ``scheduler``).

``shared`` (an object every task needs, e.g. the scenario) is sent to each worker once
(``Client.scatter`` on Dask) rather than with every task. Dask is imported only when it is
used.

Why not a Dask ``LocalCluster`` for local runs (as before): starting one imports
``distributed`` here and in every worker, each worker then imports planner again, and results
travel over TCP; for ``planner simulate`` of 4 plans on 2 cores that overhead left a speed-up
of 1.24x. The process pool runs the same function on the same arguments, so the results are
the same bits.
"""

from __future__ import annotations

import multiprocessing
import numbers
import os
import pickle
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from planner.errors import PlannerError, shorten

__all__ = ["ChildFailed", "ForkedCall", "SchedulerError", "check_scheduler", "default_workers", "map_tasks",
           "runs_serially", "start_method"]

_NOTHING = object()
#: For a ``distributed.LocalCluster`` (tests, users' own clusters): no dashboard, and the
#: scheduler's HTTP server (health and metrics routes, started even
#: without a dashboard, by default on port 8787) on a free loopback port: concurrent clusters
#: on one machine do not clash.
LOCAL_CLUSTER_HTTP = {"dashboard_address": None,
                      "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
#: Schemes of a Dask scheduler address.
SCHEMES = ("tcp://", "tls://")


class SchedulerError(PlannerError):
    """The runner asked for cannot be used: a bad or unreachable scheduler address, local
    worker processes that do not start. The message starts with the argument to blame,
    ``flag`` (``"scheduler"`` or ``"workers"``)."""

    def __init__(self, message: str, *, flag: str = "scheduler"):
        super().__init__(message)
        self.flag = flag

    def __reduce__(self):  # picklable with its flag
        return (_scheduler_error, (str(self), self.flag))


def _scheduler_error(message: str, flag: str) -> SchedulerError:
    return SchedulerError(message, flag=flag)


def default_workers(n_tasks: int) -> int:
    """One worker per core this process may run on, at most one per task (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(int(cores), int(n_tasks)))


def check_scheduler(scheduler: Any) -> None:
    """Raise :class:`SchedulerError` unless ``scheduler`` is None, ``"serial"`` or an address
    ``tcp://host:port`` / ``tls://host:port``."""
    if scheduler is None or scheduler == "serial":
        return
    if isinstance(scheduler, str) and scheduler.startswith(SCHEMES) and \
            len(scheduler) > len("tcp://"):
        return
    raise SchedulerError(
        f"scheduler: expected \"serial\", \"tcp://host:port\" of a Dask scheduler, or none "
        f"(local worker processes), got {shorten(scheduler)}"
    )


def _check_workers(n_workers: Any) -> None:
    if n_workers is None:
        return
    if isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral) \
            or n_workers < 1:
        raise PlannerError(f"n_workers: expected a positive integer number of worker "
                           f"processes, got {shorten(n_workers)}")


def runs_serially(n_tasks: int, *, scheduler: Any = None, n_workers: int | None = None,
                  client: Any = None) -> bool:
    """Whether :func:`map_tasks` would run these tasks in this process (no Dask)."""
    check_scheduler(scheduler)
    _check_workers(n_workers)
    if client is not None:
        return False
    if scheduler == "serial":
        return True
    if scheduler is not None:
        return False
    workers = default_workers(n_tasks) if n_workers is None else int(n_workers)
    return min(workers, n_tasks) <= 1


def map_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[Sequence[Any]],
    *,
    shared: Any = _NOTHING,
    scheduler: str | None = None,
    n_workers: int | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
    name: str = "planner",
) -> list[Any]:
    """``[fn(*task) for task in tasks]`` (``fn(shared, *task)`` with ``shared``), in parallel.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled to the workers).
    tasks : sequence of argument tuples
    shared : object, optional
        Passed as the first argument of every call; sent to each worker once.
    scheduler : None, "serial" or "tcp://host:port"
        See the module docstring.
    n_workers : int, optional
        Local worker processes (``scheduler=None``); default :func:`default_workers`.
    client : distributed.Client, optional
        Run on this client (overrides ``scheduler``; left open).
    progress : callable, optional
        ``progress(done, total)`` after each task finishes (the runner prints nothing).
    name : str
        Prefix of the Dask task keys.

    Returns
    -------
    list
        The results in the order of ``tasks``. A task that raised re-raises here (the first
        failing task in task order).
    """
    tasks = [tuple(t) for t in tasks]
    total = len(tasks)
    has_shared = shared is not _NOTHING
    if runs_serially(total, scheduler=scheduler, n_workers=n_workers, client=client):
        out = []
        for i, task in enumerate(tasks):
            out.append(fn(shared, *task) if has_shared else fn(*task))
            if progress is not None:
                progress(i + 1, total)
        return out
    if client is None and scheduler is None:
        return _run_local(fn, tasks, shared, has_shared, n_workers, progress)
    return _run_dask(fn, tasks, shared, has_shared, scheduler, client, progress, name)


def start_method() -> str:
    """How local worker processes start: ``"fork"`` on Linux when this process runs no other
    thread (a forked child has only the forking thread: no lock can be left held by another
    one), else ``"forkserver"`` where available (a clean server process forks them), else
    ``"spawn"`` (macOS and Windows, where fork is unsafe or absent)."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods \
            and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


#: ``shared`` of the running :func:`map_tasks` call, in a worker process (set before a fork,
#: or by the pool's initializer).
_SHARED: Any = _NOTHING


def _set_shared(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _call_shared(fn: Callable[..., Any], *task: Any) -> Any:
    return fn(_SHARED, *task)


def _run_local(fn, tasks, shared, has_shared, n_workers, progress):
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor

    total = len(tasks)
    workers = min(default_workers(total) if n_workers is None else int(n_workers), total)
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":  # the server imports the task's module once, not each worker
        ctx.set_forkserver_preload([fn.__module__])
    kwargs: dict[str, Any] = {}
    if has_shared and method != "fork":
        kwargs = {"initializer": _set_shared, "initargs": (shared,)}
    pickle.dumps((fn, tasks))  # fail here: a pickling error in the pool can hang its shutdown
    futures: list[Any] = []
    pool = None
    if has_shared and method == "fork":
        _set_shared(shared)  # inherited by the forked workers
    try:
        try:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, **kwargs)
            for task in tasks:  # in task order: equal tasks spread evenly over the workers
                futures.append(pool.submit(_call_shared, fn, *task) if has_shared
                               else pool.submit(fn, *task))
        except (OSError, RuntimeError) as exc:
            raise SchedulerError(
                f"workers: could not start {workers} local worker processes ({exc}); "
                "run serially with 1 worker", flag="workers") from None
        try:
            if progress is not None:
                for done, _ in enumerate(as_completed(futures), start=1):
                    progress(done, total)
            return [f.result() for f in futures]  # task order; the first failure in order
        except BrokenProcessPool as exc:
            raise SchedulerError(
                f"workers: a local worker process ended abruptly ({exc}); out of memory? "
                "run serially with 1 worker", flag="workers") from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        _set_shared(_NOTHING)


def _run_dask(fn, tasks, shared, has_shared, scheduler, client, progress, name):
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SchedulerError(
            "dask.distributed is not installed (pip install \"dask[distributed]\"); or run "
            "serially (scheduler \"serial\")"
        ) from exc
    total = len(tasks)
    own_client = None
    futures: list[Any] = []
    handle = None
    try:
        if client is None:
            try:
                own_client = Client(scheduler)
            except OSError as exc:  # unreachable (Dask times out after its connect timeout)
                raise SchedulerError(
                    f"scheduler {shorten(scheduler)}: cannot connect ({exc})") from None
            client = own_client
        if has_shared:
            [handle] = client.scatter([shared], hash=False)
        run = uuid.uuid4().hex  # keys unique to this call (never served from a cache)
        for i, task in enumerate(tasks):
            args = (handle, *task) if has_shared else task
            futures.append(client.submit(fn, *args, key=f"{name}-{run}-{i}", pure=False))
        if progress is not None:
            for done, _ in enumerate(as_completed(futures), start=1):
                progress(done, total)
        return [f.result() for f in futures]  # task order; the first failure in order raises
    finally:
        if own_client is None and client is not None:  # a client we do not own: free its memory
            try:
                client.cancel([*futures, *([handle] if handle is not None else [])])
            except Exception:  # pragma: no cover - best effort on a closing client
                pass
        if own_client is not None:
            own_client.close()


class ForkedCall:
    """``fn(*args)`` computed in a forked child process while the caller goes on.

    For work that would otherwise wait its turn on one core while the other is idle (the
    report's simulation and performance-validation engines run while the main process runs
    the other engines). Only where :func:`start_method` is ``"fork"`` (Linux, no other thread
    running: check with :meth:`available`): the child starts in milliseconds with everything
    already imported and ``fn``, ``args`` need not be picklable; the result is pickled back
    once. The child computes what this process would (same function, same inputs, same
    seeds), so the result is the same bits.

    :meth:`result` returns the value, or raises :class:`ChildFailed` when the child raised or
    could not send it back (the caller then runs ``fn`` itself, which raises the error with
    its traceback). Call :meth:`close` when the result is not wanted.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        ctx = multiprocessing.get_context("fork")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_forked_main, args=(send, fn, args), daemon=True,
                                 name=f"planner-{getattr(fn, '__name__', 'call')}")
        self._proc.start()
        send.close()
        self._done = False

    @staticmethod
    def available() -> bool:
        """Whether a child can be forked safely here (:func:`start_method` is ``"fork"``)."""
        return start_method() == "fork"

    def result(self) -> Any:
        """The child's return value (waits for it); :class:`ChildFailed` if it has none."""
        if self._done:
            raise RuntimeError("ForkedCall.result() called twice")
        self._done = True
        try:
            ok, value = self._recv.recv()
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            raise ChildFailed(f"the child process ended without a result ({exc!r})") from None
        finally:
            self._recv.close()
            self._proc.join()
        if not ok:
            raise ChildFailed(value)
        return value

    def close(self) -> None:
        """End the child if its result was not taken."""
        if not self._done:
            self._done = True
            self._proc.terminate()
            self._proc.join()
            self._recv.close()


class ChildFailed(RuntimeError):
    """A :class:`ForkedCall` child raised or ended without sending its result."""


def _forked_main(send: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        reply = (True, fn(*args))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which reruns fn
        reply = (False, f"{type(exc).__name__}: {exc}")
    try:
        send.send(reply)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
        send.send((False, f"result not sent back: {type(exc).__name__}: {exc}"))
    finally:
        send.close()
