"""Loss, duplicate and order checks of every delivery, by sequence number.

Every benchmark message carries a fixed-width payload head,
``SSSSSSSSQQQQQQQQ:TTTTTTTTTTTTTTTTTTT:`` (8-digit sender index and 8-digit
sequence number side by side, then the monotonic send time in ns), padded
with ``x`` to a fixed size. Names are
fixed-width too (``u00012``), so within one room every delivered message
line has the same length whatever the protocol: pychat's
``[date time] #room u00012: PAYLOAD\\r\\n`` or IRC's
``:u00012!u00012@host PRIVMSG #room :PAYLOAD\\r\\n``. The payload always
ends the line, so the checker needs no protocol knowledge: it learns a
room's record length from the first valid line any member receives.

Counting newlines cannot tell a duplicate from a loss, nor see reordering,
and parsing every line in Python would make the load generator slower
than the server it measures (which delivers millions of lines a second).
So each receiver reads straight into its own buffer (``recv_into``: no
allocation per read; an anonymous mapping, so pages never written cost
nothing), and when the buffer is nearly full its bytes are
checked at once with numpy: viewed as fixed-size records, the framing
verified (CRLF at the end, both separators in place, only digits in the
number fields), sender and sequence number decoded eight digits at a time,
and per sender every sequence number compared with the previous one + 1. Only anomalies (a gap, a duplicate, a
stray line) go through per-line Python code, so an honest run costs a few
vector operations per few hundred kilobytes.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Both numbers are 8 digits: each is one little-endian uint64 to numpy.
SENDER_DIGITS = SEQ_DIGITS = 8
TIME_DIGITS = 19
_TIME_AT = SENDER_DIGITS + SEQ_DIGITS + 1
HEAD_SIZE = _TIME_AT + TIME_DIGITS + 1
NAME_DIGITS = 5
_PAYLOAD_RE = re.compile(rb"(\d{%d})(\d{%d}):(\d{%d}):" % (SENDER_DIGITS, SEQ_DIGITS, TIME_DIGITS))
DEFAULT_BUFFER = 1 << 20

# Eight ASCII digits read as one little-endian uint64 (first digit in the
# lowest byte) are checked to be digits with two masks, and turned into
# their value with three multiply-shift steps.
_U = np.uint64
_ZEROS, _HIGH, _SIX = _U(0x3030303030303030), _U(0xF0F0F0F0F0F0F0F0), _U(0x0606060606060606)
_STEPS = ((_U(0x0F0F0F0F0F0F0F0F), _U(10 * 256 + 1), _U(8)),
          (_U(0x00FF00FF00FF00FF), _U(100 * 65536 + 1), _U(16)),
          (_U(0x0000FFFF0000FFFF), _U(10000 * 2**32 + 1), _U(32)))


def _not_digits(v: np.ndarray) -> np.ndarray:
    """Nonzero where a byte of V is not an ASCII digit."""
    return ((v ^ _ZEROS) | ((v + _SIX) ^ _ZEROS)) & _HIGH


def _value(v: np.ndarray) -> np.ndarray:
    for mask, mul, shift in _STEPS:
        v = ((v & mask) * mul) >> shift
    return v.astype(np.int64)


def name(index: int, prefix: str = "u") -> str:
    """The fixed-width name of client INDEX (``u00012``)."""
    return f"{prefix}{index:0{NAME_DIGITS}d}"


def make_payload(sender: int, seq: int, time_ns: int, size: int) -> bytes:
    """A payload of exactly SIZE bytes: the fixed-width head, then padding."""
    if size < HEAD_SIZE:
        raise ValueError(f"payloads need at least {HEAD_SIZE} bytes")
    return b"%08d%08d:%019d:" % (sender, seq, time_ns) + b"x" * (size - HEAD_SIZE)


def time_field(size: int, line_end: int) -> slice:
    """Where the send time is in a delivered line whose payload is SIZE bytes
    and that ends in LINE_END more bytes (``\\r`` after a split on ``\\n``:
    1), counted from the end of the line: for latency probes."""
    start = -(line_end + size - _TIME_AT)
    return slice(start, start + TIME_DIGITS)


def sender_field(size: int, line_end: int) -> slice:
    """Where the sender's index is in a delivered line, as ``time_field``."""
    start = -(line_end + size)
    return slice(start, start + SENDER_DIGITS)


class RoomChecker:
    """Checks what the members of one room receive from its senders.

    MEMBERS and SENDERS are client indices (the numbers in the names and
    payloads); receiver ``r`` below is a position in MEMBERS. A member never
    receives its own messages (neither pychat nor IRC echoes them).

    Readers call ``buffer(r)``, read into it, then ``received(r, n)``;
    ``feed(r, data)`` does both for bytes already read.
    """

    def __init__(self, members: Sequence[int], senders: Sequence[int], payload_size: int,
                 buffer_size: int = DEFAULT_BUFFER) -> None:
        if payload_size < HEAD_SIZE:
            raise ValueError(f"payloads need at least {HEAD_SIZE} bytes")
        self.payload_size = payload_size
        self.buffer_size = buffer_size
        self.members = list(members)
        self.senders = list(senders)
        self.n_senders = max(1, len(senders))
        self._slot = np.full(max([*members, *senders, 0]) + 1, -1, dtype=np.int64)
        self._slot[self.senders] = np.arange(len(senders))
        slot_of = {s: i for i, s in enumerate(senders)}
        self._own_slot = [slot_of.get(m, -1) for m in members]
        # Highest sequence number seen per receiver and sender slot; 0 = none yet.
        self._last = np.zeros((len(members), self.n_senders), dtype=np.int64)
        # Numbers skipped and not (yet) arrived late: [lo, hi) ranges per (r, slot).
        self._gaps: dict[tuple[int, int], list[list[int]]] = {}
        self._bufs: list[mmap.mmap | None] = [None] * len(members)
        self._views: list[memoryview | None] = [None] * len(members)
        self._fill = [0] * len(members)
        self.record_len: int | None = None
        self._dtype: np.dtype | None = None
        self.records = 0        # well-formed records from an expected sender
        self.duplicates = 0
        self.out_of_order = 0   # arrived after a later number from the same sender
        self.bad_records = 0    # message lines that are malformed or unexpected
        self.other_lines = 0    # lines that are not messages (server notices, PING)

    # -- input ---------------------------------------------------------------

    def buffer(self, r: int) -> memoryview:
        """Where receiver R's next read goes (never empty)."""
        view = self._views[r]
        if view is None:
            buf = mmap.mmap(-1, self.buffer_size)
            self._bufs[r] = buf
            view = self._views[r] = memoryview(buf)
        return view[self._fill[r]:]

    def received(self, r: int, n: int) -> None:
        """N bytes were read into ``buffer(r)``; check them once it is nearly full."""
        self._fill[r] += n
        if self.record_len is None:
            self._learn(r)
        if self.buffer_size - self._fill[r] < max(self.buffer_size // 4, 2 * (self.record_len or 256)):
            self._check(r)

    def feed(self, r: int, data: bytes) -> None:
        """Take DATA, already read by receiver R."""
        while data:
            space = self.buffer(r)
            n = min(len(space), len(data))
            space[:n] = data[:n]
            self.received(r, n)
            data = data[n:]

    def _learn(self, r: int) -> None:
        """Learn the room's record length from a valid line, without consuming it."""
        view = self._views[r]
        assert view is not None
        data = bytes(view[:self._fill[r]])
        for line in data.split(b"\n")[:-1]:
            if self._well_formed(line + b"\n"):
                self._set_record_len(len(line) + 1)
                return

    def _set_record_len(self, length: int) -> None:
        self.record_len = length
        p = length - 2 - self.payload_size
        self._dtype = np.dtype({
            "names": ["crlf", "numbers", "colon1", "colon2"],
            "formats": ["<u2", ("<u8", (2,)), "u1", "u1"],
            "offsets": [length - 2, p, p + _TIME_AT - 1, p + HEAD_SIZE - 1],
            "itemsize": length})

    def _well_formed(self, line: bytes) -> bool:
        P = self.payload_size
        m = _PAYLOAD_RE.match(line, len(line) - 2 - P) if len(line) >= P + 2 else None
        return (m is not None and line.endswith(b"\r\n")
                and line[m.end():-2] == b"x" * (P - HEAD_SIZE))

    def _check(self, r: int, final: bool = False) -> None:
        """Check receiver R's complete records and keep the incomplete tail."""
        fill = self._fill[r]
        view = self._views[r]
        if view is None or fill == 0:
            return
        L = self.record_len
        if L is None:
            tail = self._slow(r, bytes(view[:fill]))
        else:
            count = fill // L
            rec: Any = np.frombuffer(self._bufs[r], dtype=self._dtype, count=count)  # type: ignore[arg-type]
            numbers = np.ascontiguousarray(rec["numbers"])  # aligned: faster arithmetic
            wrong = _not_digits(numbers)
            ok = ((rec["crlf"] == 0x0A0D) & (rec["colon1"] == 58) & (rec["colon2"] == 58)
                  & ((wrong[:, 0] | wrong[:, 1]) == 0))
            if ok.all():
                values = _value(numbers).T.copy()
                self._sequence(r, values[0], values[1])
                tail = bytes(view[count * L:fill])
            else:
                # A stray or malformed line shifts everything after it:
                # check this batch line by line instead.
                tail = self._slow(r, bytes(view[:fill]))
            del rec, numbers
        if final and tail:
            self.bad_records += 1  # an unterminated line at the end
            tail = b""
        view[:len(tail)] = tail
        self._fill[r] = len(tail)

    def _slow(self, r: int, data: bytes) -> bytes:
        """Check DATA line by line; return the unterminated tail."""
        lines = data.split(b"\n")
        tail = lines.pop()
        senders: list[int] = []
        seqs: list[int] = []
        for line in lines:
            line += b"\n"
            m = _PAYLOAD_RE.search(line)
            if m is None:
                self.other_lines += 1
                continue
            well_formed = self._well_formed(line)
            if well_formed and self.record_len is None:
                self._set_record_len(len(line))
            if not well_formed or len(line) != self.record_len:
                self.bad_records += 1
                continue
            senders.append(int(m.group(1)))
            seqs.append(int(m.group(2)))
        if seqs:
            self._sequence(r, np.array(senders, dtype=np.int64), np.array(seqs, dtype=np.int64))
        return tail

    def _sequence(self, r: int, sender: np.ndarray, seq: np.ndarray) -> None:
        """Check the numbers of records received by R, in arrival order."""
        slot = self._slot[np.minimum(sender, len(self._slot) - 1)]
        expected = (sender < len(self._slot)) & (slot >= 0) & (slot != self._own_slot[r]) & (seq > 0)
        if not expected.all():
            self.bad_records += int((~expected).sum())
            slot, seq = slot[expected], seq[expected]
        if not len(seq):
            return
        self.records += len(seq)
        last = self._last[r]
        if self.n_senders > 1:
            # A stable sort by sender keeps each sender's arrival order.
            order = np.argsort(slot.astype(np.uint16 if self.n_senders < 65536 else np.int64), kind="stable")
            slot, seq = slot[order], seq[order]
        first = np.empty(len(seq), dtype=bool)
        first[0] = True
        np.not_equal(slot[1:], slot[:-1], out=first[1:])
        previous = np.empty_like(seq)
        previous[1:] = seq[:-1]
        previous[first] = last[slot[first]]
        final = np.empty(len(seq), dtype=bool)
        final[-1] = True
        final[:-1] = first[1:]
        anomaly = seq != previous + 1
        if not anomaly.any():
            last[slot[final]] = seq[final]
            return
        # Senders with an anomaly go through the exact per-number path.
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(seq))
        bad = np.zeros(len(starts), dtype=bool)
        bad[np.cumsum(first)[anomaly] - 1] = True
        last[slot[ends[~bad] - 1]] = seq[ends[~bad] - 1]
        for g in np.flatnonzero(bad).tolist():
            self._slow_sequence(r, int(slot[starts[g]]), seq[starts[g]:ends[g]].tolist())

    def _slow_sequence(self, r: int, slot: int, seqs: list[int]) -> None:
        last = int(self._last[r, slot])
        gaps = self._gaps.setdefault((r, slot), [])
        for q in seqs:
            if q == last + 1:
                last = q
            elif q > last + 1:
                gaps.append([last + 1, q])
                last = q
            elif _fill_gap(gaps, q):
                self.out_of_order += 1
            else:
                self.duplicates += 1
        self._last[r, slot] = last

    # -- results ---------------------------------------------------------------

    def records_received(self, nbytes: int) -> int:
        """How many records NBYTES of this room's stream hold (0 before the first line)."""
        return nbytes // self.record_len if self.record_len else 0

    def finish(self, sent: Mapping[int, int]) -> dict:
        """Check what is left and compare with SENT (client index -> messages it
        sent while measured): every other member should have each one once."""
        for r in range(len(self.members)):
            self._check(r, final=True)
        lost = expected = 0
        for slot, s in enumerate(self.senders):
            n = sent.get(s, 0)
            for r in range(len(self.members)):
                if self._own_slot[r] == slot:
                    continue
                expected += n
                seen = int(self._last[r, slot])
                if seen > n:
                    self.bad_records += 1  # a number that was never sent
                    seen = n
                lost += n - seen + sum(hi - lo for lo, hi in self._gaps.get((r, slot), ()))
        return {"expected": expected, "deliveries": expected - lost, "records": self.records,
                "lost": lost, "duplicates": self.duplicates, "out_of_order": self.out_of_order,
                "bad_records": self.bad_records, "other_lines": self.other_lines}


def _fill_gap(gaps: list[list[int]], q: int) -> bool:
    """Remove Q from the missing ranges; False if it was not missing."""
    for i, (lo, hi) in enumerate(gaps):
        if lo <= q < hi:
            if hi - lo == 1:
                del gaps[i]
            elif q == lo:
                gaps[i][0] = q + 1
            elif q == hi - 1:
                gaps[i][1] = q
            else:
                gaps[i][1] = q
                gaps.insert(i + 1, [q + 1, hi])
            return True
    return False


CHECK_KEYS = ("expected", "deliveries", "records", "lost", "duplicates", "out_of_order", "bad_records",
              "other_lines")


def merge(reports: Sequence[dict]) -> dict:
    """Add up the reports of several rooms."""
    return {k: sum(r[k] for r in reports) for k in CHECK_KEYS}
