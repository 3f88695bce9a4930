"""The moment a request leaves: what runs after the rate limiter's wait and before the bytes go.

A delivery must be claimed in the ledger only when its request is about to leave, so that a
``pending`` claim means "may have left" and nothing else. The shared HTTP client therefore calls
:func:`depart` right after the limiter lets a send-once request through and right before writing
it; a provider with no HTTP request (the sandbox outbox) calls it before it stores the message.
Whoever sends (``partnerships_orchestrator.dispatch``) installs the hook with :func:`watching` and
says which messages the request carries with :func:`carrying`; batch senders set the cargo per
request.

The same moment is where a step's cancellation is honoured: :func:`cancellable` installs a
:class:`Cancellation` (a deadline and an event), every HTTP attempt checks it before waiting for
the limiter and again before leaving, so a step reported failed sends nothing afterwards; a
limiter's wait (:func:`sleep_unless_cancelled`) ends as soon as the step is cancelled.

Context variables carry all of this, so each thread (and each step) has its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from partnerships_orchestrator.connectors.channel import Message
from partnerships_orchestrator.errors import DeliveryError, StepTimeout

DepartureHook = Callable[[Sequence[Message]], None]


class NotSent(DeliveryError):
    """The request was stopped before it left: nothing was sent (cancelled, or claimed elsewhere)."""


@dataclass
class Cancellation:
    """When a step's work must stop: a monotonic deadline and/or an explicit event."""

    deadline: float | None = None
    reason: str = "the step was cancelled"
    event: threading.Event = field(default_factory=threading.Event)

    def cancel(self, reason: str | None = None) -> None:
        if reason:
            self.reason = reason
        self.event.set()

    @property
    def cancelled(self) -> bool:
        expired = self.deadline is not None and time.monotonic() >= self.deadline
        return self.event.is_set() or expired

    def check(self) -> None:
        """Raise :class:`~partnerships_orchestrator.errors.StepTimeout` once cancelled."""
        if self.cancelled:
            raise StepTimeout(self.reason, hint="nothing more was sent after this point")


_hook: ContextVar[DepartureHook | None] = ContextVar("departure_hook", default=None)
_process_stop: list[Callable[[], str | None]] = []  # whole-process reasons to send nothing more
_cargo: ContextVar[tuple[Message, ...]] = ContextVar("departure_cargo", default=())
_cancellation: ContextVar[Cancellation | None] = ContextVar("cancellation", default=None)


@contextmanager
def watching(hook: DepartureHook) -> Iterator[None]:
    """Call ``hook(messages)`` whenever a request carrying messages is about to leave."""
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)


@contextmanager
def carrying(messages: Sequence[Message]) -> Iterator[None]:
    """The messages the next request(s) carry (one for a single send, a group for a batch)."""
    token = _cargo.set(tuple(messages))
    try:
        yield
    finally:
        _cargo.reset(token)


@contextmanager
def cancellable(cancellation: Cancellation | None) -> Iterator[None]:
    """Make ``cancellation`` the one every request of this thread checks."""
    token = _cancellation.set(cancellation)
    try:
        yield
    finally:
        _cancellation.reset(token)


def current_cancellation() -> Cancellation | None:
    return _cancellation.get()


def check_cancelled() -> None:
    """Raise when the current step was cancelled or ran past its deadline."""
    cancellation = _cancellation.get()
    if cancellation is not None:
        cancellation.check()


def sleep_unless_cancelled(seconds: float) -> None:
    """Sleep ``seconds``, waking early to raise when the current step is cancelled or its
    deadline passes (a rate limiter's wait must not outlive the step)."""
    cancellation = _cancellation.get()
    if cancellation is None:
        time.sleep(seconds)
        return
    if cancellation.deadline is not None:
        seconds = min(seconds, max(0.0, cancellation.deadline - time.monotonic()))
    cancellation.event.wait(seconds)
    cancellation.check()


def stop_sending_when(reason: Callable[[], str | None]) -> None:
    """From now on, no request of this process leaves once ``reason()`` names a reason (e.g. the
    run worker that started this step process is gone)."""
    _process_stop.append(reason)


def depart() -> None:
    """The request is about to leave: check cancellation, then run the hook for its cargo.

    Raises (and so stops the request) when the step was cancelled, the process was told to stop
    sending, or the hook refuses.
    """
    for stop in _process_stop:
        if (why := stop()) is not None:
            raise NotSent(f"not sent: {why}", retryable=False)
    cancellation = _cancellation.get()
    if cancellation is not None and cancellation.cancelled:
        raise NotSent(f"not sent: {cancellation.reason}", retryable=False)
    hook, cargo = _hook.get(), _cargo.get()
    if hook is not None and cargo:
        hook(cargo)
