"""Which failures are worth another try, and the retry loop, after AWS's adaptive retry mode.

S3 throttles a busy prefix with 503 SlowDown (and other servers with 429 or a throttling
code) and expects clients to back off: each retry waits a random time between zero and an
exponentially growing bound (full jitter, capped at 20 s), and a `Throttle` shared by every
request to one endpoint lowers how many may be in flight while the server pushes back, and
raises it again as requests succeed. botocore's own retries are switched off so that this one
policy covers the request and the reading of its body (a connection reset mid-GET).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from components.log import LOG

_T = TypeVar("_T")

THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
                              "RequestThrottled", "RequestThrottledException", "RequestLimitExceeded",
                              "TooManyRequestsException", "BandwidthLimitExceeded", "PriorRequestNotComplete"})
_SERVER_BUSY_CODES = frozenset({"RequestTimeout", "InternalError", "ServiceUnavailable"})


class RetriesExhausted(Exception):
    """A transient failure that outlasted every attempt; `error` is the last one."""

    def __init__(self, what: str, attempts: int, error: Exception):
        super().__init__(f"{what} failed after {attempts} attempts: {type(error).__name__}: {error}")
        self.attempts, self.error = attempts, error


def _status_and_code(exc: BaseException) -> tuple[int, str]:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return 0, ""
    return (exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0,
            exc.response.get("Error", {}).get("Code", ""))


def is_throttling(exc: BaseException) -> bool:
    """True when the server asks the client to slow down: 503 (S3's SlowDown), 429, or a throttling code."""
    status, code = _status_and_code(exc)
    return status in (429, 503) or code in THROTTLING_CODES


def is_unreachable(exc: BaseException) -> bool:
    """True when no server answered at all (refused, unresolved, connect timeout): retried briefly, since
    a wrong endpoint should be named within seconds."""
    from botocore.exceptions import ConnectTimeoutError as BotoConnectTimeout, EndpointConnectionError
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    return isinstance(exc, (EndpointConnectionError, BotoConnectTimeout, ConnectTimeoutError, NewConnectionError,
                            ConnectionRefusedError))


def is_transient(exc: BaseException) -> bool:
    """True for failures worth another try: 5xx, throttling, refused or reset connections, torn bodies."""
    from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError, IncompleteReadError
    from urllib3.exceptions import HTTPError as Urllib3Error

    status, code = _status_and_code(exc)
    if status or code:
        return status >= 500 or is_throttling(exc) or code in _SERVER_BUSY_CODES
    return isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, Urllib3Error,
                            ConnectionError, TimeoutError))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is tried again."""

    attempts: int = 10  # a busy or flaky server: 20% throttled requests still get through (0.2 ** 10 fails)
    unreachable_attempts: int = 5  # nothing answers: a wrong endpoint or a network down
    base_delay: float = 0.1
    max_delay: float = 20.0  # botocore's cap in its standard and adaptive modes

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number `attempt` (1-based): full jitter, so that many clients
        throttled at once do not come back at once."""
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class Throttle:
    """How many requests to one endpoint may be in flight: cut by 30% when the server throttles (at
    most once per `cut_interval`, since one overload throttles many requests at once), raised by one
    after as many successes as the limit, up to `ceiling`."""

    def __init__(self, ceiling: int = 64, floor: int = 2, cut_interval: float = 0.2):
        self.ceiling, self.floor, self.cut_interval = ceiling, floor, cut_interval
        self.limit = self.lowest = ceiling  # the lowest limit reached, for benchmarks and logs
        self._in_flight = self._successes = 0
        self._last_cut = float("-inf")
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `limit` places for a request; its outcome adjusts the limit."""
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1
        throttled = False
        try:
            yield
        except Exception as exc:
            throttled = is_throttling(exc)
            raise
        finally:
            self._release(throttled)

    def _release(self, throttled: bool) -> None:
        with self._changed:
            self._in_flight -= 1
            now = time.monotonic()
            if throttled:
                self._successes = 0
                if now - self._last_cut >= self.cut_interval and self.limit > self.floor:
                    self.limit = max(self.floor, int(self.limit * 0.7))
                    self.lowest = min(self.lowest, self.limit)
                    self._last_cut = now
                    LOG.debug("server throttling: at most %d requests in flight", self.limit)
            else:
                self._successes += 1
                if self._successes >= self.limit and self.limit < self.ceiling:
                    self.limit, self._successes = self.limit + 1, 0
            self._changed.notify_all()


def with_retries(action: Callable[[], _T], what: str, policy: RetryPolicy = RetryPolicy(),
                 throttle: Throttle | None = None) -> _T:
    """Run `action`, trying again after `policy.delay` while the failure is transient; raises
    `RetriesExhausted` when the attempts run out, and a failure that is not transient as it is.

    Each retry is logged as a warning naming `what` (the operation and the object), the error
    and the attempt it starts, so a flaky network shows before it fails a step.
    """
    attempt = 1
    while True:
        try:
            with throttle.slot() if throttle else contextlib.nullcontext():
                return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempts = policy.unreachable_attempts if is_unreachable(exc) else policy.attempts
            if attempt >= attempts:
                raise RetriesExhausted(what, attempt, exc) from exc
            LOG.warning("retrying %s after %s: %s (attempt %d of %d)", what, type(exc).__name__, exc,
                        attempt + 1, attempts)
        time.sleep(policy.delay(attempt))
        attempt += 1
