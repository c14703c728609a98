"""Run independent study tasks through any :class:`concurrent.futures.Executor`.

A study is a list of independent tasks (one seed, one N, one initial condition, ...). They run
through an executor so the same code runs serially, on local processes, or on a Dask cluster
(``Client(...).get_executor()``) / MPI (``mpi4py.futures.MPIPoolExecutor()``) with no change.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

__all__ = ["map_tasks", "executor_from_scheduler"]


def _init_worker(threads: int) -> None:
    # Cap numba/BLAS threads in each worker so workers x threads does not oversubscribe cores.
    # Workers are spawned (fresh interpreters), so numba is normally not imported yet and the
    # environment decides; if it is, its pool size is fixed and set_num_threads caps the use.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except Exception:  # pragma: no cover - numba missing
        pass


class _ClientExecutor(Executor):
    """A Dask client's executor that closes its client on :meth:`shutdown` (and ``with``)."""

    def __init__(self, client):
        self.client = client
        self._executor = client.get_executor()

    def submit(self, fn, /, *args, **kwargs):
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait)
        self.client.close()


def executor_from_scheduler(address: str) -> Executor:
    """Return an executor running on the Dask scheduler at ``address`` (e.g. ``tcp://host:8786``).

    The executor owns its Dask client: call ``shutdown()`` (or use it in a ``with`` block) when
    the study is done, so the client does not outlive it.
    """
    try:
        from dask.distributed import Client
    except ImportError as exc:  # pragma: no cover
        raise ValueError("scheduler: dask[distributed] is not installed") from exc
    try:
        client = Client(address)
    except OSError as exc:
        raise ValueError(f"scheduler: cannot reach a Dask scheduler at {address!r} "
                         f"({exc})") from None
    return _ClientExecutor(client)


def map_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any] | Iterable[Any],
    executor: Executor | str | None = None,
    *,
    max_workers: int | None = None,
    threads_per_worker: int = 1,
    progress: bool = False,
    desc: str = "tasks",
) -> list[Any]:
    """Apply ``fn`` to every task and return the results in task order.

    Parameters
    ----------
    fn : callable
        A picklable top-level function of one argument.
    tasks : sequence
        The task arguments (picklable).
    executor : Executor, "serial", "processes" or None
        ``None`` or ``"processes"``: a local :class:`ProcessPoolExecutor` with ``max_workers``
        workers (default: CPU count), each capped to ``threads_per_worker`` numba threads.
        ``"serial"``: run in this process. Any :class:`concurrent.futures.Executor` (a Dask
        ``Client.get_executor()``, an MPI pool) is used as given and not shut down.
    max_workers : int, optional
        Size of the local process pool.
    threads_per_worker : int
        Numba threads per local worker.
    progress : bool
        Show a tqdm bar while results arrive.
    desc : str
        Label of the progress bar.

    Returns
    -------
    list
        ``[fn(t) for t in tasks]``, in order.
    """
    tasks = list(tasks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=desc)
    try:
        if executor == "serial" or (executor is None and len(tasks) <= 1):
            out = []
            for t in tasks:
                out.append(fn(t))
                if bar is not None:
                    bar.update(1)
            return out
        own = executor is None or executor == "processes"
        if isinstance(executor, str) and not own:
            raise ValueError(f"executor: unknown executor {executor!r} "
                             "(use 'serial', 'processes' or an Executor)")
        ex = (
            ProcessPoolExecutor(
                max_workers=max_workers or os.cpu_count() or 1,
                # spawn, not fork: forking a process whose numba thread pool (OpenMP or
                # workqueue) has started is unsafe, and fresh workers can size their own pool.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads_per_worker,),
            )
            if own
            else executor
        )
        try:
            futures = [ex.submit(fn, t) for t in tasks]
            results = []
            for f in futures:
                results.append(f.result())
                if bar is not None:
                    bar.update(1)
            return results
        finally:
            if own:
                ex.shutdown()
    finally:
        if bar is not None:
            bar.close()
