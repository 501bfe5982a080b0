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
* ``None``: ``n_workers`` local worker processes (a ``distributed.LocalCluster`` on
  127.0.0.1 without a dashboard, closed afterwards); serial when one worker or one task.
  ``n_workers=None`` is :func:`default_workers` (one per core, at most one per task).
* ``"tcp://host:port"`` (or ``tls://``): a running Dask scheduler; its workers need planner
  installed. An unreachable address raises :class:`SchedulerError`.
* ``client``: an existing ``distributed.Client`` (overrides ``scheduler``).

``shared`` (an object every task needs, e.g. the scenario) is sent to each worker once
(``Client.scatter``) rather than with every task. Dask is imported only when it is used.
"""

from __future__ import annotations

import logging
import numbers
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from planner.errors import PlannerError, shorten

__all__ = ["SchedulerError", "check_scheduler", "default_workers", "map_tasks",
           "runs_serially"]

_NOTHING = object()
#: No dashboard, and the scheduler's HTTP server (health and metrics routes, started even
#: without a dashboard, by default on port 8787) on a free loopback port: concurrent clusters
#: on one machine do not clash.
LOCAL_CLUSTER_HTTP = {"dashboard_address": None,
                      "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
#: Worker processes of the local cluster (their nannies pass the configuration on): no
#: statistical profiler sampling the running task's stack every 10 ms.
LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}
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
    return _run_dask(fn, tasks, shared, has_shared, scheduler, n_workers, client, progress,
                     name)


def _run_dask(fn, tasks, shared, has_shared, scheduler, n_workers, client, progress, name):
    try:
        import dask
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SchedulerError(
            "dask.distributed is not installed (pip install \"dask[distributed]\"); or run "
            "serially (scheduler \"serial\")"
        ) from exc
    total = len(tasks)
    own_cluster = own_client = None
    futures: list[Any] = []
    handle = None
    try:
        if client is None:
            if scheduler is None:
                workers = min(default_workers(total) if n_workers is None else int(n_workers),
                              total)
                try:
                    with dask.config.set(LOCAL_WORKER_CONFIG):
                        own_cluster = LocalCluster(  # no memory limit, as a serial run
                            n_workers=workers, threads_per_worker=1, processes=True,
                            host="127.0.0.1", memory_limit=0, **LOCAL_CLUSTER_HTTP,
                            silence_logs=logging.CRITICAL,  # errors re-raise; no shutdown noise
                        )
                except (OSError, RuntimeError) as exc:
                    raise SchedulerError(
                        f"workers: could not start {workers} local worker processes ({exc}); "
                        "run serially with 1 worker", flag="workers") from None
                own_client = Client(own_cluster)
            else:
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
        if own_cluster is not None:
            own_cluster.close()
