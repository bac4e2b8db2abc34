"""Worker memory in bytes: Faust's stream buffer counts messages (``stream_buffer_maxsize``),
and with messages of up to the broker's 1 MiB a count alone allows gigabytes.

``ByteGate`` counts the bytes of the messages Faust has fetched and not yet handed to the
agent; past ``max_bytes`` the worker stops fetching (Faust's own back-pressure: the partitions
leave the fetcher, streams/app.py) until half of it is taken. Pure: the caller pauses and
resumes.
"""

from __future__ import annotations


class ByteGate:
    """Bytes fetched and not yet taken, with when to pause fetching and when to resume."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.paused = False

    def fetched(self, size: int) -> bool:
        """A message of ``size`` bytes was fetched; True: over the bound, pause fetching
        (again: Faust's own count back-pressure may have resumed a partition meanwhile)."""
        self.bytes += size
        if self.bytes > self.max_bytes:
            self.paused = True
            return True
        return False

    def taken(self, size: int) -> bool:
        """A message of ``size`` bytes was taken by the agent; True: resume fetching now."""
        self.bytes = max(self.bytes - size, 0)
        if self.paused and self.bytes <= self.max_bytes // 2:
            self.paused = False
            return True
        return False

    def cleared(self) -> bool:
        """Faust dropped its buffers (a rebalance): nothing is held; True: resume."""
        self.bytes = 0
        was, self.paused = self.paused, False
        return was
