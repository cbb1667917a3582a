"""Dead letters in the log: a summary by kind, at most once per interval.

A burst of bad messages (a gateway bug sends thousands) must not become
thousands of log lines; the dead-letter topic has every one, the log says how
many of which kind and shows the latest for a first look.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from txrisk.contracts import DeadLetter

logger = logging.getLogger(__name__)

# At most one summary line per interval: fast enough to notice a burst, slow
# enough that a steady trickle costs two lines a minute.
SUMMARY_INTERVAL_S = 30.0


class DeadLetterSummary:
    """Counts dead letters by kind and logs them as one line per interval.

    The first dead letter is logged at once (nothing was logged before it);
    later ones wait for the interval to pass, then go out together.
    """

    def __init__(
        self,
        interval_s: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._pending: Counter[str] = Counter()
        self._latest: DeadLetter | None = None
        self._logged_at: float | None = None

    def add(self, letters: Sequence[DeadLetter]) -> None:
        """Count a batch's dead letters; logs if the interval has passed."""
        if not letters:
            return
        self._pending.update(letter.error for letter in letters)
        self._latest = letters[-1]
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Log what is pending if the interval has passed (or `force`)."""
        if not self._pending or self._latest is None:
            return
        now = self._clock()
        if (
            not force
            and self._logged_at is not None
            and now - self._logged_at < self._interval_s
        ):
            return
        latest = self._latest
        since = "start" if self._logged_at is None else f"{now - self._logged_at:.0f}s"
        logger.warning(
            "dead letters count=%d since=%s kinds=%s latest=%s/%d@%d "
            "latest_error=%s latest_reason=%s",
            sum(self._pending.values()),
            since,
            dict(sorted(self._pending.items())),
            latest.source.topic,
            latest.source.partition,
            latest.source.offset,
            latest.error,
            latest.reason,
        )
        self._pending.clear()
        self._latest = None
        self._logged_at = now
