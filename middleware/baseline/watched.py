"""A baseline file that is read again whenever it changes on disk (a mounted ConfigMap is swapped
in place); a broken new file keeps the last good baseline in force and says so."""

from __future__ import annotations

import logging
import os
import threading

from ..errors import MonitorError
from .file import Baseline, load_baseline

__all__ = ["BaselineFile"]

logger = logging.getLogger("inferwatch")


class BaselineFile:
    """A baseline path, loaded again whenever the file behind it changes.

    The file must be readable when it is first given: a missing or broken baseline at start is
    a bad setting (:class:`MonitorError`). Later it may go and come back; the last good one
    stays in force meanwhile.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.baseline: Baseline | None = None
        self.error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._quiet = False
        if path is not None:
            self._quiet = True  # the caller reports this one
            self.refresh()
            self._quiet = False
            if self.baseline is None:
                raise MonitorError(f"Bad value for setting baseline: {self.error}")

    def refresh(self) -> Baseline | None:
        """The baseline in force, after re-reading the file if it changed.

        A file that is gone, unreadable or not a valid baseline keeps the last good one in force
        and sets :attr:`error`; nothing it holds can raise into the caller.
        """
        if self.path is None:
            return None
        with self._lock:
            try:
                info = os.stat(self.path)  # follows the ..data symlink a ConfigMap swaps
                stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
            except OSError as exc:
                # Forget the stamp: the same file put back (a rename, a restore) is read again.
                self._stamp = None
                self._failed(f"cannot read baseline file {self.path}: {exc.strerror}")
                return self.baseline
            if stamp == self._stamp:
                return self.baseline
            self._stamp = stamp
            try:
                baseline = load_baseline(self.path)
            except MonitorError as exc:
                self._failed(str(exc))
            except Exception as exc:  # a shape the validation missed must not stop the checks
                self._failed(f"baseline file {self.path} could not be loaded: {exc!r}")
                logger.exception("inferwatch: loading the baseline %s failed", self.path)
            else:
                self.baseline = baseline
                self.error = None
                logger.info("inferwatch: baseline %s loaded (%d rows)", self.path, baseline.rows)
            return self.baseline

    def _failed(self, reason: str) -> None:
        reason = reason.rstrip(". ") + "."
        if self.baseline is not None:
            reason += " The last good baseline stays in force."
        if reason != self.error and not self._quiet:
            logger.warning("inferwatch: %s", reason)
        self.error = reason
