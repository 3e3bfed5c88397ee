"""Moving finished blocks from the device to the host without making the host wait for each one.

On CUDA each block is copied on a stream of its own into pinned (page-locked) host memory, so the
copy travels while the next tiles compute, and the host takes delivery of a block only a few
blocks later, once the copy's event has fired. Pinned memory is what makes the copy asynchronous:
`non_blocking=True` into ordinary pageable memory is a synchronous copy all the same. On a CPU a
block is already in host memory and is delivered at once, with no copy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

# deliver(top, left, block): the block in host memory, once its copy is complete.
Delivery = Callable[[int, int, torch.Tensor], None]


class HostCopies:
    """Blocks put in on the device come out, in the same order, as host tensors to `deliver`.

    At most `in_flight` blocks are on their way at a time (each holds a pinned buffer); `flush()`
    delivers the rest and must be called before the results are used.
    """

    def __init__(self, device: torch.device, deliver: Delivery, in_flight: int = 8) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        self.device = device
        self.deliver = deliver
        self.in_flight = in_flight
        self._pending: deque[tuple[int, int, torch.Tensor, torch.cuda.Event]] = deque()
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(self, top: int, left: int, block: torch.Tensor) -> None:
        """Start moving `block` (computed on the current stream) to the host."""
        if self._stream is None:
            self.deliver(top, left, block.cpu())
            return
        host = torch.empty(block.shape, dtype=block.dtype, pin_memory=True)
        # The copy stream waits for the kernels that compute the block, and the block's memory is
        # not handed back to the compute stream's allocator before the copy has read it.
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            host.copy_(block, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self._stream)
        block.record_stream(self._stream)
        self._pending.append((top, left, host, copied))
        while len(self._pending) > self.in_flight:
            self._deliver_oldest()

    def flush(self) -> None:
        """Deliver every block still on its way (waiting for their copies)."""
        while self._pending:
            self._deliver_oldest()

    def _deliver_oldest(self) -> None:
        top, left, host, copied = self._pending.popleft()
        copied.synchronize()
        self.deliver(top, left, host)
