"""Sets of byte ranges: which parts of a partial file are done."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class RangeSet:
    """Disjoint, sorted, merged half-open ranges [start, end)."""

    def __init__(self, ranges: Iterable[tuple[int, int]] | Iterable[list[int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add(int(start), int(end))

    def add(self, start: int, end: int) -> None:
        """Mark [start, end) done, merging with neighbours."""
        if end <= start:
            return
        merged: list[tuple[int, int]] = []
        placed = False
        for s, e in self._ranges:
            if e < start:
                merged.append((s, e))
            elif end < s:
                if not placed:
                    merged.append((start, end))
                    placed = True
                merged.append((s, e))
            else:
                start, end = min(s, start), max(e, end)
        if not placed:
            merged.append((start, end))
        self._ranges = merged

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """The ranges as (start, end), in order."""
        return iter(self._ranges)

    @property
    def total(self) -> int:
        """Bytes covered."""
        return sum(e - s for s, e in self._ranges)

    def prefix_end(self) -> int:
        """End of the range that starts at 0 (how far the file is contiguous)."""
        if self._ranges and self._ranges[0][0] == 0:
            return self._ranges[0][1]
        return 0

    def missing(self, size: int) -> list[tuple[int, int]]:
        """The gaps in [0, size)."""
        gaps: list[tuple[int, int]] = []
        pos = 0
        for s, e in self._ranges:
            if s > pos:
                gaps.append((pos, min(s, size)))
            pos = max(pos, e)
        if pos < size:
            gaps.append((pos, size))
        return [(s, e) for s, e in gaps if e > s]

    def covers(self, size: int) -> bool:
        """Whether [0, size) is all done."""
        return not self.missing(size)

    def to_list(self) -> list[list[int]]:
        """JSON form."""
        return [[s, e] for s, e in self._ranges]
