"""A node of a cluster: several pychat processes sharing one world through Redis.

One Redis Stream (``pychat:events``) carries every event that changes the
world. A node publishes its users' requests to the stream and carries out
every event, its own included, only when it reads it back: every node sees
one order, and nothing is shown to anyone before it is in Redis.

Names are claimed by Lua scripts that check the name, give the claim a
fence token (a counter) and append the event in one step. Each node holds a
lease key that it renews; any node sweeps the nodes whose lease expired:
their names are freed and their users' quits appended to the stream.

Two links to Redis, both non-blocking sockets in the server's loop: ``cmd``
for scripts and appends (written once per loop pass), ``feed`` for the
blocking read of the stream (XREAD BLOCK), so a read that waits never
delays a publish. If either fails, the node is unavailable (requests are
refused with "cluster unavailable") until both are back and it has taken
its lease again; the feed then reads on from the last id it carried out.

An entry of the stream has the publishing node (``n``) and either one
event (``e``, JSON; with the claim's fence ``f`` for a claim) or the
events its users asked for in one pass of its loop (``m``, a list in
Python's marshal format, see ``encode_batch``, with a sequence number
``s`` by which the node sees its own entries come back): one append and
one decode per pass, not per message.

Every entry is numbered (field ``c``) from a counter that the same script
increments (``appended``): a node that finds a number skipped knows that
entries were trimmed from the stream before it read them (it lagged more
than the stream keeps), tells its users of the gap and starts over.

What the stream keeps is bounded in bytes, not only in entries: a pass's
events go in entries of at most ENTRY_BYTES (about) and ENTRY_EVENTS, and
each append trims the stream to about STREAM_BYTES at this node's average
entry size (``_kept``), between KEPT_MIN and KEPT_MAX entries. Small
entries are kept long (a node cut off for a while reads on where it
stopped); large ones cannot fill Redis's memory.

Keys (all under ``pychat:``): ``events`` the stream; ``appended`` how many
entries were ever appended (the last one's ``c``); ``names`` name key ->
"node fence"; ``fence`` the fence counter; ``nodes`` the nodes with a
lease; ``lease:NODE`` NODE's lease (a token, with a TTL); ``held:NODE``
the names NODE holds (key -> fence); ``epoch`` a random value set once:
if it changes, Redis lost its data; ``cloak`` the secret every node makes
users' shown hosts with, so that a user's host, and a ban of it, is the
same whichever node it came through; ``archiver:FILE`` the node that
writes the history file FILE (its id, see HistoryStore.file_id), held like
a lease: nodes on one machine may share one file, and only the holder
writes it (the others read it, and take the lock if the holder dies).
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from typing import Any, Callable

from pychat.core.replicated import ReplicatedHall, encode, encode_batch
from pychat.core.text import clip
from pychat.core.timers import Timers
from pychat.server.redis import LinkDown, RedisAddress, RedisLink, Reply

log = logging.getLogger("pychat.cluster")

PREFIX = "pychat:"
STREAM = PREFIX + "events"
NAMES = PREFIX + "names"
FENCE = PREFIX + "fence"
NODES = PREFIX + "nodes"
EPOCH = PREFIX + "epoch"
CLOAK = PREFIX + "cloak"
ARCHIVER = PREFIX + "archiver:"
APPENDED = PREFIX + "appended"
STREAM_BYTES = 512 << 20    # about how much of the stream Redis keeps (see _kept)
KEPT_MIN, KEPT_MAX = 4_000, 1_000_000   # entries kept (MAXLEN ~): at least, at most
ENTRY_BYTES = 128 << 10     # a pass's events go in entries of about this much at most,
ENTRY_EVENTS = 1024         # and this many (the events an entry has ids for, replicated.first_event_id)
ENTRY_OVERHEAD = 100        # bytes an entry takes in Redis besides its data (its id and fields)
LEASE_MS = 10_000           # a node not heard from for this long is declared lost
RENEW_EVERY = 2.0           # seconds between lease renewals (and sweeps)
TIMEOUT = 5.0               # seconds without an expected reply before a link is closed
READ_BLOCK_MS = 1000        # the longest one XREAD waits
READ_COUNT = 1000           # entries per XREAD
LARGE_READ = 64 << 10       # a read of this many bytes of events or more, after another: the node is busy,
READ_EVERY = 0.1            # and rests until this long (seconds) after it arrived, then reads, see _entries
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
SNAPSHOT_WAIT = 5.0         # seconds a joining node waits for another node's world

# Every script that appends to the stream appends with this: the entry (fields ...)
# numbered after the last one (field c, from the counter COUNTER), the stream trimmed
# to about KEPT entries; its id and its number.
_NUMBERED = """
local function append(stream, counter, kept, ...)
  local c = redis.call('INCR', counter)
  return redis.call('XADD', stream, 'MAXLEN', '~', kept, '*', 'c', c, ...), c
end
"""

# Claim a name: refused if this node has no lease (-1) or the name is held (0).
CLAIM = _NUMBERED + """
if redis.call('GET', KEYS[5]) ~= ARGV[5] then return -1 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local f = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. f)
redis.call('HSET', KEYS[4], ARGV[1], f)
append(KEYS[3], KEYS[6], ARGV[4], 'n', ARGV[2], 'f', f, 'e', ARGV[3])
return f
"""

# Give up a name for another: -1 no lease, -2 the old claim is no longer ours, 0 the new name is held.
MOVE = _NUMBERED + """
if redis.call('GET', KEYS[5]) ~= ARGV[7] then return -1 end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[4] .. ' ' .. ARGV[2] then return -2 end
if ARGV[3] ~= ARGV[1] and redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return 0 end
local f = redis.call('INCR', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4] .. ' ' .. f)
redis.call('HSET', KEYS[4], ARGV[3], f)
append(KEYS[3], KEYS[6], ARGV[6], 'n', ARGV[4], 'f', f, 'e', ARGV[5])
return f
"""

# Give up a name, if the claim is still ours, and append the quit.
RELEASE = _NUMBERED + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] .. ' ' .. ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
append(KEYS[3], KEYS[4], ARGV[5], 'n', ARGV[3], 'e', ARGV[4])
return 1
"""

# Free the names of every node whose lease is gone (ARGV[3]: also this node's, at its start),
# appending a quit for each; returns how many nodes were swept.
SWEEP = _NUMBERED + """
local swept = 0
local nodes = redis.call('SMEMBERS', KEYS[1])
if ARGV[3] ~= '' then table.insert(nodes, ARGV[3]) end
for _, node in ipairs(nodes) do
  if node == ARGV[3] or redis.call('EXISTS', ARGV[1] .. 'lease:' .. node) == 0 then
    local held = redis.call('HGETALL', ARGV[1] .. 'held:' .. node)
    for i = 1, #held, 2 do
      if redis.call('HGET', KEYS[2], held[i]) == node .. ' ' .. held[i + 1] then
        redis.call('HDEL', KEYS[2], held[i])
        local quit = cjson.encode({'quit', held[i], tonumber(held[i + 1]), ARGV[4], tonumber(ARGV[5])})
        append(KEYS[3], KEYS[4], ARGV[2], 'n', node, 'e', quit)
      end
    end
    redis.call('DEL', ARGV[1] .. 'held:' .. node)
    if node ~= ARGV[3] then
      redis.call('SREM', KEYS[1], node)
      swept = swept + 1
    end
  end
end
return swept
"""

# Take this node's lease (1), unless another process holds it (0); then the stream's last id,
# how many other nodes hold a lease, and the number of the last entry appended.
TAKE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0, ''} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local others = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if node ~= ARGV[3] and redis.call('EXISTS', ARGV[4] .. 'lease:' .. node) == 1 then others = others + 1 end
end
local appended = tonumber(redis.call('GET', KEYS[4]) or '0')
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if #last == 0 then return {1, '0-0', others, appended} end
return {1, last[1][1], others, appended}
"""

# Append an entry (ARGV[2..]: its fields) numbered after the last; returns its id and number.
APPEND = _NUMBERED + """
local id, c = append(KEYS[1], KEYS[2], ARGV[1], unpack(ARGV, 2))
return {id, c}
"""

# Renew the lease if it is still this node's (1), else 0: the node was declared lost.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


# Hold the lock of a history file for ARGV[2] ms (1), unless another process holds it (0),
# or nobody does and this one may not take it yet (2; ARGV[3] '0').
HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if not holder and ARGV[3] == '0' then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# Tries (one every RENEW_EVERY) a node that lacks events the file lacks too waits
# for a node that has them to take a free lock, before it takes it itself.
INCOMPLETE_WAIT = 3

# Give up the lock of a history file, if this process holds it.
LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def _claim_answer(refused: Callable[[str], None]) -> Callable[[Reply], None]:
    """The callback of CLAIM or MOVE: 0 is a name held by someone else; an error,
    or a negative answer (no lease, the old claim lost), is the cluster being unavailable."""
    def answer(reply: Reply) -> None:
        if isinstance(reply, Exception) or (isinstance(reply, int) and reply < 0):
            refused("unavailable")
        elif reply == 0:
            refused("taken")
    return answer


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Cluster:
    """This node's side of the cluster: the links, the lease, the stream."""

    def __init__(self, address: RedisAddress, node: str, hall: ReplicatedHall,
                 sel: selectors.BaseSelector, timers: Timers, mono: Callable[[], float]) -> None:
        self.address = address
        self.node = node
        self.hall = hall
        self.timers = timers
        self._mono = mono
        self.lease_key = f"{PREFIX}lease:{node}"
        self.held_key = f"{PREFIX}held:{node}"
        self.token = os.urandom(8).hex()  # this process's lease: a restarted node gets a new one
        self.cmd = RedisLink("cmd", address, sel, self._link_up, self._link_down, TIMEOUT)
        self.feed = RedisLink("feed", address, sel, self._link_up, self._link_down, TIMEOUT + READ_BLOCK_MS / 1000)
        self.ready = False            # both links up, lease held, reading the stream
        self.started = False          # this process took its lease once (its old claims were swept)
        self.last_id: str | None = None   # the last stream id carried out
        self.last_number = 0              # the last entry's number (field c) read; 0: none yet
        self.epoch: str | None = None
        self.backoff = BACKOFF_FIRST
        self._down_reason = ""  # why Redis could not be used, as last logged
        self._reconnect_due = False
        self._releases: list[tuple[str, int, list[Any]]] = []  # quits to publish once back
        # This loop pass's events, appended to the stream together as one entry
        # (one XADD, one decode per node), before any script and when the pass ends.
        self._batch: list[list[Any]] = []
        # Batches appended and not read back yet, by sequence number, with what
        # was sent: reading its own entry back, a node carries out the events
        # it has instead of decoding them again.
        self._sent = 0
        self._entry_size = float(ENTRY_OVERHEAD)  # this node's entries' average size in Redis (moving)
        self._in_flight: dict[int, tuple[list[list[Any]], bytes]] = {}
        self._started_asking = 0.0
        hall.on_snapshot_request = self._snapshot_requested
        self._stopped = False
        self._world = 0  # how many times this node started over: what a read asked before brings is dropped
        self._last_read_large = False  # the last read brought LARGE_READ bytes or more
        # Until when (monotonic) the server's loop rests between passes: the
        # node is busy (see _entries). 0.0: it is not.
        self.rest_until = 0.0
        self._read_due = False  # a rest is over: read at the end of this pass (flush)
        hall.bus = self
        # The history file is written by one node of those sharing it: until this
        # one holds its lock, it keeps what it would write (HistoryStore.follow).
        self.archive_key = ARCHIVER + hall.history.file_id
        hall.history.shared = True
        hall.history.follow()
        self._archive_role = ""  # "leads" or "follows", as last logged
        self._free_tries = 0     # HOLD found the lock free and left it (this node is not complete)

    # -- the bus the Hall publishes to ----------------------------------------------

    @property
    def available(self) -> bool:
        return self.ready

    def publish(self, event: list[Any]) -> None:
        self._batch.append(event)

    def _append_pending(self) -> None:
        """This pass's events so far, if any, as entries of the stream (field ``m``: a list of events, encode_batch)."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        # A busy pass has thousands of events. It is cut by count, and a part whose
        # encoding is too large sets a smaller count, by the size it came to, for
        # itself and the rest of the pass: an event is encoded once, or again for
        # each time its part was too large (halving an encoded pass until each
        # half fitted encoded every event once per halving).
        count, start = ENTRY_EVENTS, 0
        while start < len(batch):
            part = batch[start:start + count] if start or len(batch) > count else batch
            payload = encode_batch(part)
            if len(payload) > ENTRY_BYTES and len(part) > 1:
                count = max(1, len(part) * (ENTRY_BYTES * 7 // 8) // len(payload))  # under len(part)
                continue
            start += len(part)
            self._append_batch(part, payload)

    def _append_batch(self, batch: list[list[Any]], payload: bytes) -> None:
        """BATCH, encoded as PAYLOAD, as one entry of the stream."""
        self._sent += 1
        seq = self._sent
        self._in_flight[seq] = (batch, payload)
        self._entry_size += (len(payload) + ENTRY_OVERHEAD - self._entry_size) / 64
        self.cmd.call(lambda reply: self._published(reply, seq), "EVAL", APPEND, 2, STREAM, APPENDED, self._kept(),
                      "n", self.node, "s", seq, "m", payload)

    def _kept(self) -> int:
        """How many entries the stream keeps (MAXLEN ~ of this node's appends):
        about STREAM_BYTES at the size of this node's recent entries."""
        return max(KEPT_MIN, min(KEPT_MAX, int(STREAM_BYTES / self._entry_size)))

    def _published(self, reply: Reply, seq: int) -> None:
        if not isinstance(reply, Exception):
            return  # kept until it is read back
        sent = self._in_flight.pop(seq, None)
        if sent is not None:
            # Not read back from the stream either: it may be lost.
            log.warning("cluster: %d event(s) may not have been published: %s", len(sent[0]), reply)
            self.hall.publish_failed(sent[0])

    def _read_back(self, seq: int, data: bytes) -> list[list[Any]] | None:
        """This node's batch SEQ came back from the stream as DATA: its events,
        if they are what was sent (a node of the same name before a restart
        numbered its batches from 1 too). Batches sent before it and not read
        back never will be (a gap): they are let go."""
        in_flight = self._in_flight
        sent = in_flight.pop(seq, None)
        if in_flight and min(in_flight) < seq:
            for earlier in [k for k in in_flight if k < seq]:
                del in_flight[earlier]
        return sent[0] if sent is not None and sent[1] == data else None

    def claim(self, key: str, event: list[Any], refused: Callable[[str], None]) -> None:
        self._append_pending()  # what was asked before stays before, in the stream too
        self.cmd.call(_claim_answer(refused), "EVAL", CLAIM, 6, NAMES, FENCE, STREAM, self.held_key,
                      self.lease_key, APPENDED, key, self.node, encode(event), self._kept(), self.token)

    def move(self, old_key: str, fence: int, key: str, event: list[Any], refused: Callable[[str], None]) -> None:
        self._append_pending()
        self.cmd.call(_claim_answer(refused), "EVAL", MOVE, 6, NAMES, FENCE, STREAM, self.held_key,
                      self.lease_key, APPENDED, old_key, fence, key, self.node, encode(event), self._kept(), self.token)

    def release(self, key: str, fence: int, event: list[Any]) -> None:
        if not self.cmd.up:
            self._releases.append((key, fence, event))
            return
        self._append_pending()
        payload = encode(event)

        def answer(reply: Reply) -> None:
            if isinstance(reply, LinkDown):
                self._releases.append((key, fence, event))  # sent again once back
        self.cmd.call(answer, "EVAL", RELEASE, 4, NAMES, self.held_key, STREAM, APPENDED, key, fence, self.node,
                      payload, self._kept())

    # -- links --------------------------------------------------------------------

    def start(self) -> None:
        mono = self._mono()
        self.cmd.connect(mono)
        self.feed.connect(mono)
        self.timers.call_at(mono + RENEW_EVERY, self._tick)

    def stop(self) -> None:
        """The server is stopping: give up the lease so that the sweep frees our names at once."""
        self._stopped = True
        self._append_pending()
        if self.cmd.up:
            self.cmd.call(lambda reply: None, "DEL", self.lease_key)
            if self.hall.history.archiving:  # another node sharing the file takes it at once
                self.cmd.call(lambda reply: None, "EVAL", LET_GO, 1, self.archive_key, self.token)

    def flush(self) -> None:
        """The end of a loop pass: this pass's events and commands leave for Redis,
        then the read a rest put off, so that it finds them (see _entries)."""
        self._append_pending()
        mono = self._mono()
        if self.cmd.out:
            self.cmd.flush(mono)
        if self._read_due:
            self._read_due = False
            self._read_again()
        if self.feed.out:
            self.feed.flush(mono)

    def _link_up(self) -> None:
        if self.cmd.up and self.feed.up:
            self._take_lease()

    def _link_down(self, reason: str) -> None:
        was_ready, self.ready = self.ready, False
        self._not_busy()
        if was_ready:
            log.warning("cluster: Redis at %s unreachable (%s); requests are refused until it is back",
                        self.address, reason)
        elif reason != self._down_reason:  # said once, not at every try
            log.warning("cluster: cannot use Redis at %s (%s); trying again", self.address, reason)
        self._down_reason = reason
        for link in (self.cmd, self.feed):
            link.close(reason)  # both, so that they come back together
        self._append_pending()  # refused at once: their senders are told
        if not self._reconnect_due and not self._stopped:
            self._reconnect_due = True
            self.timers.call_at(self._mono() + self.backoff, self._reconnect)
            self.backoff = min(BACKOFF_MAX, self.backoff * 2)

    def _reconnect(self) -> None:
        self._reconnect_due = False
        if self._stopped:
            return
        mono = self._mono()
        if not self.cmd.up and self.cmd.state == "down":
            self.cmd.connect(mono)
        if not self.feed.up and self.feed.state == "down":
            self.feed.connect(mono)

    def _tick(self) -> None:
        """Every RENEW_EVERY seconds: timeouts, the lease, the sweep."""
        mono = self._mono()
        self.timers.call_at(mono + RENEW_EVERY, self._tick)
        self.cmd.check_timeout(mono)
        self.feed.check_timeout(mono)
        if not self.ready:
            return
        self.cmd.call(self._renewed, "EVAL", RENEW, 1, self.lease_key, self.token, LEASE_MS)
        self._hold_archive()
        self.cmd.call(self._swept, "EVAL", SWEEP, 4, NODES, NAMES, STREAM, APPENDED, PREFIX, self._kept(), "",
                      "node lost", time.time())

    def _renewed(self, reply: Reply) -> None:
        if reply == 0 and self.ready:
            # Its users' quits are in the stream (the sweep's): as they come back, each
            # user keeps its connection and claims its name again once this node is back.
            log.error("cluster: this node's lease expired and it was declared lost; taking it again")
            self.ready = False
            self._not_busy()
            self._take_lease()

    def _hold_archive(self) -> None:
        """Take or keep the lock of this node's history file (with the lease)."""
        history = self.hall.history
        # A node that joined after events the file lacks (its writer died before
        # writing them) would write the file with a hole: one that has them goes first.
        may_take = history.archiving or history.complete or self._free_tries >= INCOMPLETE_WAIT
        self.cmd.call(self._archive_answer, "EVAL", HOLD, 1, self.archive_key, self.token, LEASE_MS,
                      int(may_take))

    def _archive_answer(self, reply: Reply) -> None:
        if isinstance(reply, Exception) or self._stopped:
            return
        history = self.hall.history
        self._free_tries = self._free_tries + 1 if reply == 2 else 0
        role = "leads" if reply == 1 else "follows"
        if role == "leads":
            history.lead()
        else:
            history.follow()
        if role != self._archive_role:
            self._archive_role = role
            log.info("cluster: node %s %s", self.node, "writes its history file" if role == "leads" else
                     "reads its history file, which another node writes")

    def _swept(self, reply: Reply) -> None:
        if isinstance(reply, int) and reply > 0:
            log.info("cluster: %d lost node(s) swept: their names are free", reply)

    # -- joining the stream --------------------------------------------------------------

    def _take_lease(self) -> None:
        """Both links are up: check the epoch, sweep our old claims (at our start), take our lease."""
        epoch = os.urandom(8).hex()
        self.cmd.call(lambda reply: None, "SET", EPOCH, epoch, "NX")
        self.cmd.call(lambda reply: None, "SET", CLOAK, os.urandom(16).hex(), "NX")
        self.cmd.call(self._got_cloak, "GET", CLOAK)
        self.cmd.call(self._got_epoch, "GET", EPOCH)

    def _got_cloak(self, reply: Reply) -> None:
        if isinstance(reply, LinkDown):
            return  # the link's close handles it
        try:
            self.hall.set_cloak_key(bytes.fromhex(reply.decode()))
        except (AttributeError, ValueError):  # not there, refused (an ACL), or not hex
            log.warning("cluster: no shared host secret in %s (%r); this node's shown hosts are its own",
                        CLOAK, reply)

    def _got_epoch(self, reply: Reply) -> None:
        if isinstance(reply, Exception):
            return  # the link's close handles it
        epoch = reply.decode()
        if self.epoch is not None and epoch != self.epoch:
            self._start_over("Redis lost its data (new epoch)", " (its Redis lost its data)")
            self.started = False
        self.epoch = epoch
        self.cmd.call(self._leased, "EVAL", TAKE_LEASE, 4, self.lease_key, NODES, STREAM, APPENDED, self.token,
                      LEASE_MS, self.node, PREFIX)

    def _leased(self, reply: Reply) -> None:
        if isinstance(reply, Exception):
            return
        taken, last = reply[0], reply[1].decode()
        if not taken:
            log.warning("cluster: node name %s is held by another process (or one just killed); "
                        "trying again in %g s", self.node, RENEW_EVERY)
            self.timers.call_at(self._mono() + RENEW_EVERY, self._take_lease_again)
            return
        if not self.started:  # the claims of an earlier process of this node are freed
            self.cmd.call(lambda reply: None, "EVAL", SWEEP, 4, NODES, NAMES, STREAM, APPENDED, PREFIX, self._kept(),
                          self.node, "node restarted", time.time())
        if self.last_id is not None and _id_tuple(last) < _id_tuple(self.last_id):
            self._start_over("the stream lost events this node had read")
        if self.last_id is None and reply[2]:
            self._ask_snapshot()  # other nodes are running: the world is theirs
            return
        if self.last_id is None:
            self.last_id = last  # the first node: the world is what this node holds
            self.last_number = reply[3]
        self._now_ready()

    def _now_ready(self) -> None:
        self.started = True
        self.backoff = BACKOFF_FIRST
        self._down_reason = ""
        self.ready = True
        log.info("cluster: node %s connected to %s, reading from %s", self.node, self.address, self.last_id)
        for key, fence, event in self._releases:
            self.release(key, fence, event)
        self._releases.clear()
        if not self.feed.waiting:  # the feed carries only XREADs: never two, they would read the same entries
            self._read()
        self._hold_archive()
        self.hall.reclaim_orphans()

    # -- joining a running cluster: the world as of a request in the stream -------------------

    def _ask_snapshot(self) -> None:
        """Append a request for the world; any other node answers with its world as of
        that request (a key of its own); this node reads on from the request."""
        token = os.urandom(8).hex()
        payload = encode(["snapreq", token])

        def appended(reply: Reply) -> None:
            if isinstance(reply, Exception):
                return  # the link's close starts over
            self.last_id, self.last_number = reply[0].decode(), reply[1]
            self._started_asking = self._mono()
            self._poll_snapshot(token)
        self.cmd.call(appended, "EVAL", APPEND, 2, STREAM, APPENDED, self._kept(), "n", self.node, "e", payload)

    def _poll_snapshot(self, token: str) -> None:
        if not self.cmd.up or self.ready:
            return

        def got(reply: Reply) -> None:
            if isinstance(reply, Exception):
                return
            if reply is None:
                if self._mono() - self._started_asking > SNAPSHOT_WAIT:
                    log.warning("cluster: no node answered with the world in %g s; starting from what this "
                                "node holds", SNAPSHOT_WAIT)
                    self._now_ready()
                    return
                self.timers.call_at(self._mono() + 0.05, lambda: self._poll_snapshot(token))
                return
            self.hall.load_snapshot(reply)
            log.info("cluster: took the world from another node (%d bytes)", len(reply))
            self._now_ready()
        self.cmd.call(got, "GET", f"{PREFIX}snap:{token}")
        self.cmd.flush(self._mono())

    def _snapshot_requested(self, token: str, make: Callable[[], bytes]) -> None:
        """Another node joins: the world as of its request (the first node to answer wins)."""
        self.cmd.call(lambda reply: None, "SET", f"{PREFIX}snap:{token}", make(), "NX", "EX", 60)

    def _take_lease_again(self) -> None:
        if self.cmd.up and self.feed.up and not self.ready:
            self._take_lease()

    # -- reading the stream ---------------------------------------------------------------

    def _rest_over(self) -> None:
        """The rest after a busy read is over: the pass under way reads its
        clients first, and the stream once their events are appended (flush)."""
        self._read_due = True

    def _read_again(self) -> None:
        """Read the stream, unless the node cannot or a read is under way."""
        if self.ready and not self._stopped and self.last_id is not None and not self.feed.waiting:
            self._read()

    def _not_busy(self) -> None:
        """No rest from now on, and the next large read is the first of its run:
        the node stopped reading (Redis lost, its lease or its world)."""
        self.rest_until = 0.0
        self._last_read_large = False
        self._read_due = False

    def _read(self) -> None:
        assert self.last_id is not None
        world = self._world

        def answer(reply: Reply) -> None:
            if world == self._world:
                self._entries(reply)
            else:  # asked before this node started over: not its world's entries
                self._read_again()
        self.feed.call(answer, "XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS, "STREAMS", STREAM,
                       self.last_id)
        self.feed.flush(self._mono())

    def _start_over(self, why: str, cause: str = "") -> None:
        """This node's world is no longer the cluster's (WHY, logged): its users are
        told (CAUSE, what they are told of it) and let go, and it reads the stream
        on from its end, with the world of the other nodes if there are any."""
        log.error("cluster: %s; this node starts over", why)
        self.hall.lose_local_users(f"the cluster lost recent events{cause}; please reconnect", time.time())
        self.last_id, self.last_number = None, 0
        self._world += 1
        self._not_busy()

    def _trimmed(self, missed: int) -> None:
        """Entries were trimmed from the stream before this node read them: its
        world lacks their events. Its users are told and let go, and it starts
        over from the world of the other nodes, as when it joined."""
        self._start_over(f"{missed} entries of the stream were trimmed before this node read them "
                         "(it fell too far behind)")
        self.ready = False
        self._take_lease()

    def _fields(self, fields: list[bytes]) -> tuple[int, str, int, bytes, bool, int]:
        """An entry's fields: its number (0 if it has none), its node, the claim's
        fence, its data, whether that is a batch, and the batch's number if this
        node sent it (ValueError, IndexError if they cannot be read)."""
        number, node, fence, data, batch, seq = 0, "", 0, b"", False, 0
        for i in range(0, len(fields), 2):
            name = fields[i]
            if name == b"m":
                data, batch = fields[i + 1], True
            elif name == b"c":
                number = int(fields[i + 1])
            elif name == b"e":
                data = fields[i + 1]
            elif name == b"n":
                node = fields[i + 1].decode()
            elif name == b"f":
                fence = int(fields[i + 1])
            elif name == b"s" and node == self.node:
                seq = int(fields[i + 1])
        return number, node, fence, data, batch, seq

    def _entries(self, reply: Reply) -> None:
        if isinstance(reply, Exception):
            return
        arrived = self._mono()
        size = 0
        entries = reply[0][1] if reply else ()
        if entries:
            apply = self.hall.apply
            for entry_id, fields in entries:
                self.last_id = entry_id.decode()
                try:
                    number, node, fence, data, batch, seq = self._fields(fields)
                except (ValueError, IndexError):
                    # Read again after a reconnection, it would stop the stream for good.
                    log.warning("cluster: an entry that cannot be read was skipped: %s %r", self.last_id,
                                clip(repr(fields), 80))
                    continue
                if number:
                    if self.last_number and number > self.last_number + 1:
                        self._trimmed(number - self.last_number - 1)
                        return
                    self.last_number = number
                size += len(data)
                own = self._read_back(seq, data) if seq else None
                try:
                    apply(node, fence, data, batch, self.last_id, own)
                except Exception:
                    log.exception("cluster: internal error carrying out event %s; skipped", self.last_id)
        if not self.ready:
            return
        # Two large reads in a row mean that the nodes are busy: the server's
        # loop rests until READ_EVERY after this one arrived (Server._rest).
        # What arrives meanwhile waits in the kernel and in Redis. The pass
        # after the rest reads the node's clients, appends what they sent, and
        # only then reads the stream (_rest_over, flush), so that the read
        # finds them; the next pass carries it out and writes to the clients.
        # A busy node so works in a few large passes a second rather than many
        # small ones, each of which costs a recv(), an append and a send() per
        # client. A node that is slower than that, or behind (a full read),
        # reads again at once; one large read alone (a node that stalled for a
        # moment) changes nothing.
        large = size >= LARGE_READ
        busy, self._last_read_large = large and self._last_read_large, large
        if busy and len(entries) < READ_COUNT and self._mono() < arrived + READ_EVERY:
            self.rest_until = arrived + READ_EVERY
            self.timers.call_at(self.rest_until, self._rest_over)
        else:
            self._read()
