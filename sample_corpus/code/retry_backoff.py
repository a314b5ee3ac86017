"""Retry a flaky operation with exponential backoff and jitter."""

import random
import time


def retry(operation, attempts=5, base_delay=0.5, max_delay=30.0, retry_on=(ConnectionError, TimeoutError)):
    """Call operation() until it succeeds or attempts run out.

    The delay doubles after each failure (exponential backoff) and a random jitter is added so that
    many clients that failed together do not all retry at the same moment (the thundering herd).
    """
    for attempt in range(attempts):
        try:
            return operation()
        except retry_on:
            if attempt == attempts - 1:
                raise
            delay = min(max_delay, base_delay * 2 ** attempt)
            time.sleep(delay * random.uniform(0.5, 1.5))
