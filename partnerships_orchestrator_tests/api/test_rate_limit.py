"""The per-token request budget: a burst of N, one more every 60/N seconds, shared by every
API process of a home (the file they all map)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from partnerships_orchestrator.api.rate_limit import RateLimiter

TAKE_MANY = """
import sys
from pathlib import Path
from partnerships_orchestrator.api.rate_limit import RateLimiter
limiter = RateLimiter(Path(sys.argv[1]))
print(sum(limiter.take("tok_shared", 6) is None for _ in range(int(sys.argv[2]))))
"""


def test_a_budget_is_a_burst_then_one_per_interval_with_retry_after(tmp_path: Path):
    limiter = RateLimiter(tmp_path / "limits")
    assert [limiter.take("tok_a", 3) for _ in range(3)] == [None, None, None]
    wait = limiter.take("tok_a", 3)
    assert wait is not None and 1 <= wait <= 20  # one request every 20 s
    assert limiter.take("tok_b", 3) is None  # another token has its own budget
    fast = RateLimiter(tmp_path / "limits")  # the same file: the same budgets
    assert fast.take("tok_a", 3) is not None
    assert [fast.take("tok_c", 600) for _ in range(600)] == [None] * 600
    assert fast.take("tok_c", 600) == 1
    time.sleep(0.2)  # one request every 0.1 s
    assert fast.take("tok_c", 600) is None


def test_processes_sharing_a_home_share_each_tokens_budget(tmp_path: Path):
    path = tmp_path / "limits"
    RateLimiter(path).close()
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKE_MANY, str(path), "20"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    allowed = [int(run.communicate(timeout=60)[0]) for run in runs]
    assert sum(allowed) == 6, allowed  # a burst of 6 in all; one more only after 10 s


def test_a_full_table_gives_way_to_new_tokens(tmp_path: Path):
    limiter = RateLimiter(tmp_path / "limits", slots=4)
    for n in range(4):
        assert limiter.take(f"tok_{n}", 1) is None  # each spent its whole budget
    assert limiter.take("tok_new", 1) is None  # took the slot closest to a full budget
    assert limiter.take("tok_new", 1) is not None
    assert limiter.take("tok_3", 1) is not None  # still held: its budget still spent
    assert limiter.take("tok_0", 1) is None  # the oldest: its slot was given away, afresh
