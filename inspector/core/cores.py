"""How inspecting shares the CPU's cores (two on a typical station PC): a helper thread for
the second half of an image shrink, and numpy's BLAS kept to one thread while inspecting."""
from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_inspecting = 0  # inspections running now, in any thread
_limit = None  # the BLAS limit in force while any runs


@functools.cache
def helper() -> ThreadPoolExecutor:
    """The second core's thread (for the bottom half of a shrink)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-helper")


@functools.cache
def _blas_thread() -> ThreadPoolExecutor:
    """The one thread that changes OpenBLAS's process-wide thread count (threadpoolctl lets a
    single thread do that), so that inspections in any thread can ask it."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-blas")


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread while inspecting. Its second thread keeps spinning after each
    matrix product and takes the core that ONNX Runtime and the next image's decoding need:
    on two cores one thread scores as fast per image and the line gets about a third more
    images through. Training keeps both threads. Concurrent inspections share one limit."""
    global _inspecting, _limit
    with _lock:
        if _inspecting == 0:
            _limit = _blas_thread().submit(_blas_controller().limit, limits=1, user_api="blas").result()
        _inspecting += 1
    try:
        yield
    finally:
        with _lock:
            _inspecting -= 1
            if _inspecting == 0:
                _blas_thread().submit(_limit.restore_original_limits).result()
                _limit = None
