"""Work the platform server runs beside its routes: the continuous-training controller.

``oikyo ui`` runs :class:`oikyo.loop.controller.Controller` in a daemon thread for as long as the
server runs (started by the app's lifespan, stopped on shutdown), so an applied loop policy is acted
on without a separate ``oikyo loop run``. Two controllers never act on the same deployment at once
(each takes a lease per deployment), so running both is harmless. Turn it off with
``oikyo ui --no-loop`` or ``OIKYO_LOOP=0``. :func:`oikyo.api.app.create_app` leaves it off unless
asked (``loop=True``), so tests and embedders that build the app get no thread.

Usage::

    runner = LoopThread.start()     # the controller ticks in a daemon thread
    runner.stop()                   # sets its stop event, waits up to ``join_s`` for the thread
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

ENV = "OIKYO_LOOP"
_OFF = ("0", "false", "no", "off")


def loop_wanted(flag: bool = True) -> bool:
    """Whether the server should run the controller: ``flag`` (``--no-loop`` clears it) and ``OIKYO_LOOP`` not 0."""
    return bool(flag) and os.environ.get(ENV, "1").strip().lower() not in _OFF


class LoopThread:
    """The loop controller in a daemon thread, stopped through an event (it finishes its current step)."""

    def __init__(self, controller, thread: threading.Thread, stop_event: threading.Event):
        self.controller, self.thread, self.stop_event = controller, thread, stop_event

    @classmethod
    def start(cls, **controller_options) -> "LoopThread":
        from oikyo.loop.controller import Controller

        controller = Controller(log=lambda message: log.info("%s", message), **controller_options)
        stop_event = threading.Event()
        thread = threading.Thread(target=cls._run, args=(controller, stop_event), name="oikyo-loop-controller",
                                  daemon=True)
        thread.start()
        return cls(controller, thread, stop_event)

    @staticmethod
    def _run(controller, stop_event: threading.Event) -> None:
        try:
            controller.run(stop_event)
        except Exception:  # the server keeps serving; the log says why the loop stopped
            log.exception("the loop controller stopped")

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, join_s: float = 10.0) -> None:
        self.stop_event.set()
        self.thread.join(join_s)
