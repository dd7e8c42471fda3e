"""LineBuffer: chunking invariance, terminators, EOF tail, overlong lines."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pychat.protocols.framing import LINE_TOO_LONG, LineBuffer


def frame_all(chunks, max_line=4096):
    buf = LineBuffer(max_line)
    out = []
    for chunk in chunks:
        out.extend(buf.feed(chunk))
    out.extend(buf.finish())
    return out


def reference(data: bytes, max_line: int):
    """What framing must produce, computed the simple way on the whole stream."""
    parts = data.split(b"\n")
    tail = parts.pop()
    out = []
    for line in parts:
        line = line[:-1] if line.endswith(b"\r") else line
        out.append(LINE_TOO_LONG if len(line) > max_line else line)
    tail = tail[:-1] if tail.endswith(b"\r") else tail
    if tail:
        out.append(LINE_TOO_LONG if len(tail) > max_line else tail)
    return out


stream = st.lists(st.sampled_from([b"a", b"\xc3\xa9", b"\r", b"\n", b"\r\n", b" ", b"\xff", b"xyz"]),
                  max_size=200).map(b"".join)


@st.composite
def chunked(draw, data_strategy=stream):
    data = draw(data_strategy)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    chunks, prev = [], 0
    for cut in cuts + [len(data)]:
        chunks.append(data[prev:cut])
        prev = cut
    return data, chunks


@settings(max_examples=300)
@given(chunked(), st.integers(1, 12))
def test_any_chunking_gives_the_same_lines(case, max_line):
    data, chunks = case
    assert frame_all(chunks, max_line) == frame_all([data], max_line) == reference(data, max_line)


@settings(max_examples=300)
@given(chunked(), st.integers(1, 12), st.lists(st.integers(1, 4), min_size=1, max_size=8))
def test_push_and_pop_a_few_at_a_time_gives_the_same_lines(case, max_line, limits):
    """The flood-control path: each chunk is kept whole and cut a few lines at a time."""
    data, chunks = case
    buf = LineBuffer(max_line)
    out, turn = [], 0
    for chunk in chunks:
        buf.push(chunk)
        while buf.waiting:
            got = buf.pop(limits[turn % len(limits)])
            assert len(got) <= limits[turn % len(limits)]
            out.extend(got)
            turn += 1
    out.extend(buf.finish())
    assert out == reference(data, max_line)


@settings(max_examples=300)
@given(chunked(), st.integers(1, 12), st.lists(st.integers(1, 4), min_size=1, max_size=8),
       st.lists(st.integers(0, 3), min_size=1, max_size=8))
def test_lines_given_back_come_first_and_nothing_is_lost(case, max_line, limits, handled):
    """A held request: the lines cut after it are given back (unread) and
    popped again first, before the rest of the chunk and the unfinished tail."""
    data, chunks = case
    buf = LineBuffer(max_line)
    out, turn = [], 0
    for chunk in chunks:
        buf.push(chunk)
        while buf.waiting:
            got = buf.pop(limits[turn % len(limits)])
            keep = min(len(got), handled[turn % len(handled)])
            out.extend(got[:keep])
            buf.unread(got[keep:])  # handled KEEP of them, gave the others back
            if keep == 0 and got:
                out.append(got[0])  # at least one each turn, so that the loop ends
                buf.pop(1)
            turn += 1
    out.extend(buf.finish())
    assert out == reference(data, max_line)


def test_waiting_input_stays_one_compact_chunk():
    """21,845 lines in one read are not turned into 21,845 objects while they wait."""
    buf = LineBuffer(4096)
    chunk = b"ab\n" * 21845
    buf.push(chunk)
    assert buf.pop(20) == [b"ab"] * 20
    assert buf.waiting and buf._chunk is chunk  # the same bytes object, not a copy or a list


@given(st.binary(max_size=300), st.data())
def test_random_bytes_byte_by_byte(data, draw):
    max_line = draw.draw(st.integers(1, 50))
    one_by_one = frame_all([data[i:i + 1] for i in range(len(data))], max_line)
    assert one_by_one == frame_all([data], max_line) == reference(data, max_line)


def test_terminators_and_tail():
    assert frame_all([b"a\nb\r\nc"]) == [b"a", b"b", b"c"]
    assert frame_all([b"a\r", b"\nb"]) == [b"a", b"b"]
    assert frame_all([b"\n\n"]) == [b"", b""]
    assert frame_all([b""]) == []


def test_overlong_line_gives_one_error_and_is_skipped():
    buf = LineBuffer(max_line=10)
    out = buf.feed(b"x" * 25)
    assert out == [LINE_TOO_LONG]
    assert buf.pending == 0
    out = buf.feed(b"y" * 100)   # still the same line: no second error
    assert out == []
    assert buf.feed(b"zz\nok\n") == [b"ok"]


def test_memory_stays_bounded_for_a_huge_line():
    buf = LineBuffer(max_line=4096)
    errors = []
    for _ in range(160):  # 10 MB without a newline
        errors.extend(buf.feed(b"q" * 65536))
        assert buf.pending <= 4097
    assert errors == [LINE_TOO_LONG]
    assert buf.feed(b"\nhello\n") == [b"hello"]


def test_line_of_exactly_max_line_bytes_passes():
    assert frame_all([b"x" * 10 + b"\r\n"], max_line=10) == [b"x" * 10]
    assert frame_all([b"x" * 11 + b"\n"], max_line=10) == [LINE_TOO_LONG]
