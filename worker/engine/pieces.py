"""The pieces of one transfer, handed out in file order so the contiguous prefix (what the
hasher can read) trails the furthest byte by at most one piece per connection.

A connection that finds nothing left to take steals the back half of the piece with the most
bytes still to come, so the last seconds of a file are not one slow connection's alone.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

MiB = 1 << 20


class Piece:
    """A byte range [start, end) being fetched; `end` may shrink when another connection steals
    its back half, and `reach` is how far its reader has asked for (written or in flight)."""

    __slots__ = ("end", "reach", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.reach = start

    def __repr__(self) -> str:
        return f"Piece({self.start}, {self.end})"


class PieceQueue:
    """Pieces not yet taken, in file order, and the ones being fetched."""

    def __init__(self, gaps: Iterable[tuple[int, int]], piece_size: int, margin: int) -> None:
        # `margin`: a steal leaves the victim at least this much past what it has asked for
        # (one read's worth), so a read in flight never crosses the new end.
        self.margin = margin
        self.piece_size = max(1, piece_size)
        self._lock = threading.Lock()
        self._todo: deque[Piece] = deque()
        self._busy: set[Piece] = set()
        for s, e in gaps:
            for start in range(s, e, self.piece_size):
                self._todo.append(Piece(start, min(e, start + self.piece_size)))

    def __len__(self) -> int:
        with self._lock:
            return len(self._todo)

    def take(self) -> Piece | None:
        """The next piece in file order, else the back half of the busiest piece, else None."""
        with self._lock:
            piece = self._todo.popleft() if self._todo else self._steal()
            if piece is not None:
                self._busy.add(piece)
            return piece

    def put_back(self, piece: Piece, pos: int) -> None:
        """A connection gave up [pos, piece.end) without fetching it: another may take it."""
        with self._lock:
            self._busy.discard(piece)
            if pos < piece.end:
                self._todo.appendleft(Piece(pos, piece.end))

    def finished(self, piece: Piece) -> None:
        """The piece is fetched (up to its possibly shrunk end)."""
        with self._lock:
            self._busy.discard(piece)

    def reset(self, size: int) -> None:
        """Start again with the whole file as one piece (a server without ranges)."""
        with self._lock:
            self._busy.clear()
            self._todo = deque([Piece(0, size)])

    def _steal(self) -> Piece | None:
        victim, left = None, 0
        for piece in self._busy:
            cut_from = piece.reach + self.margin
            if piece.end - cut_from > left:
                victim, left = piece, piece.end - cut_from
        # Worth a new request only when both halves keep at least a piece's quarter.
        if victim is None or left < max(2 * self.margin, self.piece_size // 2):
            return None
        mid = victim.end - left // 2
        stolen = Piece(mid, victim.end)
        victim.end = mid
        return stolen
