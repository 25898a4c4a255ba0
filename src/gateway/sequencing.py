"""Request numbers and what each decision sees: the gateway's numbering.

A routed request is numbered when it arrives and decided by the stored fan-outs of requests
numbered below its own minus ``--lag`` (``--explore_lag`` for explore fan-outs finished after
their response), less those still running: it never waits for another request's backends. What
it did not see goes into its log line (``unseen``), so ``src.replay --server_log`` reproduces the
decision exactly; :class:`Seen` is that record read back.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from src.gateway.core import _Call


@dataclass(frozen=True)
class Seen:
    """What a server's log line says request ``seq`` was decided by (``src.replay --server_log``):
    the earlier requests whose fan-outs it did not see, and the contenders with free capacity
    its draw was among (None: no draw)."""

    unseen: list[int]
    among: list[str] | None = None


class Sequencing:
    """The core's numbering (a mixin of ``Core``): it keeps ``_last_seq`` (the highest number
    given out), ``_unsettled`` (requests deciding or fanning out before their response) and
    ``_late`` (explore fan-outs running after it), and pins each request's rows in the router."""

    def _pin(self, call: _Call) -> None:
        """Number-time: fix the rows request ``seq`` is decided by (those stored now, less the
        fan-outs of earlier requests still running), without waiting for any of them."""
        seq = call.seq
        self._last_seq = max(self._last_seq, seq)
        unseen = self.recorded[seq].unseen if self.recorded is not None and seq in self.recorded \
            else ([] if self.recorded is not None else self._running_below(seq))
        self._unsettled.add(seq)
        self.router.pin(seq, unseen)
        call.smoothie["unseen"] = list(unseen)

    def _running_below(self, seq: int) -> list[int]:
        """The fan-outs request ``seq`` would see if they were stored, still running now."""
        s = self.settings
        return sorted([q for q in self._unsettled if q < seq - s.lag] +
                      [q for q in self._late if q < seq - s.explore_lag])

    @contextlib.contextmanager
    def _next_view(self):
        """The request number the next request would get, pinned as it would be, for reports:
        /health's ranking is what the next single call follows, not an estimate over other rows."""
        seq = self._last_seq + 1
        mine = not self.router.is_pinned(seq)
        if mine:
            self.router.pin(seq, self._running_below(seq))
        try:
            yield seq
        finally:
            if mine:
                self.router.unpin(seq)

    def _settle(self, seq: int) -> None:
        self._unsettled.discard(seq)
        self._late.discard(seq)

    def _hand_over(self, seq: int) -> None:
        """Request ``seq`` was answered; its fan-out goes on as a late one."""
        self._late.add(seq)
        self._unsettled.discard(seq)
