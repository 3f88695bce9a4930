"""Per-token request budget (N requests a minute, a burst of N), shared by every API process
of one home.

A generic cell rate algorithm: each key keeps one number, its theoretical arrival time (TAT);
a request is allowed when TAT is at most a minute less one interval ahead of now, and moves TAT
one interval (60 / N seconds) on. The numbers live in a small file of fixed slots that every
API process maps (`MAP_SHARED`) and updates under an exclusive `flock`, so a token's budget holds
whichever of `partnerships up --api-workers N` processes its requests reach.

Slots are found by a hash of the key and linear probing; a slot whose TAT lies in the past is a
full budget, indistinguishable from an empty one, and is reused. If every
probed slot is in use, the one closest to a full budget is given to the new key.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
from pathlib import Path

SLOTS = 4096  # keys (tokens) with a budget in use at once
PROBES = 64  # slots looked at for one key
WINDOW = 60.0  # seconds: budgets are per minute
_SLOT = struct.Struct("<16sd")  # the key's digest, its TAT (seconds since the epoch)
_EMPTY = bytes(16)


class RateLimiter:
    """``take(key, per_minute)`` spends one request, or says how many seconds until one is free."""

    def __init__(self, path: Path, slots: int = SLOTS) -> None:
        self.path = path
        self.slots = slots
        size = slots * _SLOT.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)  # zeros: every slot empty
        self._map = mmap.mmap(self._fd, size)
        self._lock = threading.Lock()  # flock is per open file: threads of one process too

    def take(self, key: str, per_minute: int) -> int | None:
        """``None`` when allowed; else the whole seconds to wait (for `Retry-After`)."""
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        interval = WINDOW / per_minute
        tolerance = WINDOW - interval  # a full budget is a burst of per_minute requests
        now = time.time()
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                offset, tat = self._slot(digest, now)
                tat = max(tat, now)
                if tat - now > tolerance:
                    return max(1, math.ceil(tat - tolerance - now))
                _SLOT.pack_into(self._map, offset, digest, tat + interval)
                return None
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, digest: bytes, now: float) -> tuple[int, float]:
        """The offset of ``digest``'s slot and its TAT (``now`` for a slot taken afresh)."""
        start = int.from_bytes(digest[:8], "little") % self.slots
        free: int | None = None
        oldest: tuple[float, int] | None = None
        for step in range(min(PROBES, self.slots)):
            offset = ((start + step) % self.slots) * _SLOT.size
            held, tat = _SLOT.unpack_from(self._map, offset)
            if held == digest:
                return offset, tat
            if held == _EMPTY:
                return (offset if free is None else free), now  # the key is nowhere further on
            if free is None and tat <= now:
                free = offset
            if oldest is None or tat < oldest[0]:
                oldest = (tat, offset)
        if free is not None:
            return free, now
        assert oldest is not None  # nosec B101 # the loop ran at least once
        return oldest[1], now

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
