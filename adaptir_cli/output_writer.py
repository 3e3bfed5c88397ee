"""Encoding and writing outputs on a thread of their own, while the device restores the next image.

Encoding a large PNG can take as long as restoring it on a GPU; done in line, the device would wait
for every file. A single writer thread does it instead, in submission order, and only a bounded
number of finished outputs may wait for it: each holds its image's integer samples, so memory
stays bounded however slow the disk, and a run that restores faster than it can write is held to
the writer's pace instead of filling the memory. Results come back in submission order
(`InOrder`), so a run reports its images in the order it had them whatever finished first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

# One output being written while the next image is restored. This double buffering gives all the
# overlap there is when writing is faster than restoring; when it is slower, the disk sets the pace
# whatever the queue's length, and every further place would hold one more output's samples.
DEFAULT_MAX_PENDING = 1


class OutputWriter:
    """One background thread running submitted writes in order; at most `max_pending` of them
    are queued or running at a time (`submit` waits for a place)."""

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._places = threading.BoundedSemaphore(max_pending)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptir-writer")

    def submit(self, write: Callable[[], T]) -> Future[T]:
        """Queue `write`, once a place is free; its result or exception is the future's."""
        self._places.acquire()
        try:
            future = self._thread.submit(write)
        except BaseException:
            self._places.release()
            raise
        # Called when the write ends, and also when close(cancel=True) cancels it unstarted.
        future.add_done_callback(lambda _: self._places.release())
        return future

    def close(self, cancel: bool = False) -> None:
        """Wait for the writes; `cancel` drops those not started (the one running always ends,
        and, being atomic, leaves its file whole or absent)."""
        self._thread.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        # Stopped by an error or an interrupt, the run writes no more than the file in progress.
        self.close(cancel=kind is not None)


class InOrder(Generic[T]):
    """Results in the order they were added, each either ready or to be made from a future."""

    def __init__(self) -> None:
        self._entries: deque[tuple[Future | None, Callable[[Future | None], T]]] = deque()

    def add(self, result: T) -> None:
        self._entries.append((None, lambda _: result))

    def add_future(self, future: Future, finish: Callable[[Future], T]) -> None:
        """`finish(future)` makes the result once the future is done."""
        self._entries.append((future, finish))

    def ready(self) -> Iterator[T]:
        """The results that can be given without waiting: those up to the first unfinished future."""
        while self._entries and (self._entries[0][0] is None or self._entries[0][0].done()):
            future, finish = self._entries.popleft()
            yield finish(future)

    def all(self) -> Iterator[T]:
        """Every remaining result, waiting for each future in turn."""
        while self._entries:
            future, finish = self._entries.popleft()
            if future is not None:
                future.exception()  # waits; finish() reads the outcome
            yield finish(future)
