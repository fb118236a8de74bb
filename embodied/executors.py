"""Where cells run: a local process pool or a Ray cluster, the same cells and the same numbers.

Both executors yield each finished (cell, result) as soon as it completes, so the parent
(the only writer of the results file) appends it at once and a crash loses at most the
cells still running. Each cell seeds everything it draws from its own seed and runs
single-threaded, so where and in which order a cell runs never changes its numbers.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing import connection, forkserver
from typing import Any, Protocol, TypeVar

Item = TypeVar("Item")
CellFn = Callable[[Any, Any], dict]

# Set in every local worker (and a Ray task's environment): what starts a thread pool after it
# keeps to one core. torch's threads are set by each cell (evaluate.seed_torch); numpy's BLAS
# is loaded before it in a local worker, as in the parent, so a cell computes alike in both.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
# What the pool's fork server imports once: its workers fork from it with torch, MuJoCo and the
# cell code loaded, instead of importing them anew (spawn: ~3 s of a core per worker and pool).
PRELOAD = ["embodied.evaluate"]


class Executor(Protocol):
    def map(self, fn: CellFn, items: Sequence[Item], cfg: Any) -> Iterator[tuple[Item, dict]]:
        """``fn(item, cfg)`` for every item, yielded in the order they finish."""


def _result(item: Any, get: Callable[[], dict]) -> dict:
    """A finished item's result; its failure names the item."""
    try:
        return get()
    except Exception as err:
        raise RuntimeError(f"{getattr(item, 'cell_id', item)} failed: {err}") from err


def _worker_init(alive: connection.Connection) -> None:
    """One thread per cell, and exit when the parent dies: a killed ``embodied-eval`` must not
    leave workers behind (they block forever on a queue whose writer they share)."""
    os.environ.update(SINGLE_THREAD_ENV)
    threading.Thread(target=_exit_with, args=(alive,), daemon=True).start()


def _exit_with(alive: connection.Connection) -> None:
    """Wait for end of file on ``alive``: its one writer, the parent, closed it or died. (Not
    the parent's pid: a fork server's workers are its children, and it waits for them.)"""
    with suppress(EOFError):
        alive.recv()
    os._exit(1)


def pool_context() -> multiprocessing.context.BaseContext:
    """The fork server, started once per process with PRELOAD imported under this process's
    environment (so numpy's BLAS runs as it does in this process: a cell's numbers do not
    depend on where it runs); spawn where the platform has no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    return context


def _stop_workers(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Terminate the workers of an interrupted map, not wait for their cells to finish.

    A cell may take SIGTERM as "checkpoint and stop" (training does) or catch it and carry on;
    the pool's shutdown would then wait for it, forever if it never returns. Workers still
    running ``grace`` seconds after SIGTERM are killed (their cells resume from checkpoints).
    """
    running = list((getattr(pool, "_processes", None) or {}).values())
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace
    while running and (left := deadline - time.monotonic()) > 0:
        ended = set(connection.wait([p.sentinel for p in running], left))
        running = [p for p in running if p.sentinel not in ended]
    for process in running:
        process.kill()


@dataclass
class LocalExecutor:
    """A process pool (a fork server's, see pool_context) on this machine; ``workers=None``
    uses every core.

    ``workers=1`` runs the cells in this process, one after another (easiest to debug).
    """

    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 or None (every core), got {self.workers}")

    def map(self, fn: CellFn, items: Sequence[Item], cfg: Any) -> Iterator[tuple[Item, dict]]:
        workers = min(self.workers or os.cpu_count() or 1, max(len(items), 1))
        if workers == 1:
            for item in items:
                yield item, _result(item, lambda item=item: fn(item, cfg))
            return
        context = pool_context()
        alive, alive_writer = context.Pipe(duplex=False)  # the writer never leaves this process
        pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_worker_init, initargs=(alive,)
        )
        try:
            pending = {pool.submit(fn, item, cfg): item for item in items}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    yield item, _result(item, future.result)
        except BaseException:  # Ctrl-C, SIGTERM, a failed cell, the caller stopped reading
            _stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            alive.close()
            alive_writer.close()


@dataclass
class RayExecutor:
    """Remote Ray tasks, one per cell, on ``address`` or on a local runtime started here.

    ``num_cpus`` sizes a local runtime (None: every core); ``runtime_env`` is passed to
    ``ray.init`` (a cluster's workers need embodied-ood: ``{"pip": [...]}`` or an image that
    has it). A runtime already initialised by the caller is used as it is and left running.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_cell: float = 1.0
    runtime_env: dict[str, Any] | None = None

    def map(self, fn: CellFn, items: Sequence[Item], cfg: Any) -> Iterator[tuple[Item, dict]]:
        try:
            import ray
        except ImportError as err:
            raise ImportError("executor=ray needs Ray: pip install 'embodied-ood[ray]'") from err
        started = not ray.is_initialized()
        if started:
            ray.init(
                address=self.address,
                num_cpus=None if self.address else self.num_cpus,
                include_dashboard=False,
                runtime_env=self._runtime_env(),
            )
        remote = ray.remote(num_cpus=self.cpus_per_cell)(fn)
        cfg_ref = ray.put(cfg)
        pending = {remote.remote(item, cfg_ref): item for item in items}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    item = pending.pop(ref)
                    yield item, _result(item, lambda ref=ref: ray.get(ref))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()

    def _runtime_env(self) -> dict[str, Any]:
        env = dict(self.runtime_env or {})
        env["env_vars"] = {**SINGLE_THREAD_ENV, **env.get("env_vars", {})}
        return env
