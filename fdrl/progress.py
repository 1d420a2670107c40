"""The progress bar of every long verb: one kind, shown by rank 0 alone, on stderr.

stdout keeps what a verb reports (the result, JSON logs); the bar goes to stderr, so that piping
stdout stays clean, and it shows the throughput (images or steps per second) that tells whether
a job runs at the speed it should. Off rank 0 the bar is disabled: N processes would otherwise
draw N bars over each other.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int | None, desc: str, unit: str, enabled: bool = True,
             initial: int = 0) -> tqdm:
    """A bar counting `unit`s (`img`, `step`) up to `total` (None: unknown) from `initial`, with
    their rate per second, on stderr; a silent one unless `enabled` (pass `is_main` where a verb
    runs on several ranks). Use it as a context manager, or `close()` it."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)
