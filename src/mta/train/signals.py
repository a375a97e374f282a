"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM (`kill`, a job scheduler) end training after the step in
progress, with the training state saved, instead of killing the process wherever it is."""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """`with StopRequest() as stop:` SIGINT and SIGTERM set `stop.signal` (the first one's name) instead of ending
    the process; a trainer checks it between steps, saves its state and returns.

    A second signal restores the handlers that were there before and delivers itself to them (Ctrl-C twice:
    KeyboardInterrupt at once). Outside the main thread, where Python cannot install handlers, nothing changes.
    """

    def __init__(self):
        self.signal: str | None = None
        self.previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _handle(self, number: int, frame) -> None:
        if self.signal is not None:
            self._restore()
            signal.raise_signal(number)
            return
        self.signal = signal.Signals(number).name
        print(f"\n{self.signal}: stopping after this step and saving the training state (again to stop at once)",
              file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}
