"""What every request of a cluster node's Hall waits on: publishing it to the
stream, its outcome coming back, and the stand-ins for users of other nodes.

pychat.core.replicated's module text says how a request travels; the
requests themselves are in replicated.py (names, rooms, chat),
replicated_rooms.py (rooms' settings and moderation) and
replicated_accounts.py (accounts and server operators).
"""

from __future__ import annotations

from typing import Any, Callable, NoReturn, Protocol

from pychat.core.errors import NAME_TAKEN, Busy, ChatError
from pychat.core.events import Renderer
from pychat.core.model import Hall, User
from pychat.core.text import name_key

CLUSTER_UNAVAILABLE = "cluster-unavailable"
PENDING_WAIT = 10.0  # seconds a request waits for the stream before it is looked at again
NO_OUTCOME = object()


class Pending(Busy):
    """A request is in the cluster's stream; its outcome is not known yet."""

    def __init__(self) -> None:
        super().__init__("waiting for the cluster", PENDING_WAIT)


class ClusterBus(Protocol):
    """What the Hall needs of the cluster: publishing, and name claims."""

    node: str

    @property
    def available(self) -> bool: ...

    def publish(self, event: list[Any]) -> None:
        """Append EVENT to the stream."""

    def claim(self, key: str, event: list[Any], refused: Callable[[str], None]) -> None:
        """Claim the name KEY and append EVENT with the claim's fence; REFUSED(why) if it cannot."""

    def move(self, old_key: str, fence: int, key: str, event: list[Any], refused: Callable[[str], None]) -> None:
        """Give up OLD_KEY (held with FENCE) for KEY, and append EVENT with the new fence."""

    def release(self, key: str, fence: int, event: list[Any]) -> None:
        """Give up the name KEY (held with FENCE) and append EVENT, if it is still held so."""


class _Discard:
    """The outbox of a user on another node: what is sent to it here goes nowhere."""

    out: Any = None
    closed = False
    unsent = 0

    def queue(self, data: bytes) -> None:
        pass

    def wake(self) -> None:
        pass

    def disconnect(self) -> None:
        pass


class _NoList:
    """A list whose appends go nowhere (a remote member's entry in a room)."""

    __slots__ = ()

    def append(self, data: bytes) -> None:
        pass

    def pop(self) -> bytes:
        return b""


REMOTE_OUTBOX = _Discard()
REMOTE_OUTBOX.out = _NoList()


class _Remote:
    """The renderer of users on other nodes: nothing to render for them here."""

    per_room = True
    echo = True  # say() then leaves its sender's copy alone: there is none
    delivers = False  # in no room's fan-out group: a room message costs nothing per remote member

    def __getattr__(self, name: str) -> Callable[..., bytes]:
        return _nothing


def _nothing(*args: Any) -> bytes:
    return b""


REMOTE: Renderer = _Remote()  # type: ignore[assignment]


def unavailable() -> ChatError:
    return ChatError("cluster unavailable: try again in a moment", CLUSTER_UNAVAILABLE)


class StreamHall(Hall):
    """A Hall whose requests travel through the cluster's stream (see pychat.core.replicated)."""

    # Set by ReplicatedHall.__init__.
    node: str
    bus: ClusterBus | None
    resume: Callable[[Any], None]
    _applying: bool
    _expected: dict[Any, set[tuple[str, str]]]
    _settled: dict[Any, dict[tuple[str, str], Any]]
    _to_resume: list[Any]

    # -- waiting for the stream -------------------------------------------------

    def _bus(self) -> ClusterBus:
        bus = self.bus
        if bus is None or not bus.available:
            raise unavailable()
        return bus

    def _outcome(self, outbox: Any, op: str, key: str) -> Any:
        """What came back for OP on KEY (a value, raised if a refusal), or NO_OUTCOME;
        Pending if it is still on its way."""
        settled = self._settled.get(outbox)
        if settled is not None:
            result = settled.pop((op, key), NO_OUTCOME)
            if not settled:
                del self._settled[outbox]
            if result is not NO_OUTCOME:
                if isinstance(result, ChatError):
                    raise result
                return result
        expected = self._expected.get(outbox)
        if expected is not None and (op, key) in expected:
            if self.bus is None or not self.bus.available:
                expected.discard((op, key))
                raise unavailable()
            raise Pending()
        return NO_OUTCOME

    def _expect(self, outbox: Any, op: str, key: str) -> Pending:
        self._expected.setdefault(outbox, set()).add((op, key))
        return Pending()

    def _settle(self, outbox: Any, op: str, key: str, result: Any) -> None:
        """OP on KEY came back: keep its outcome for OUTBOX and wake it, if a local
        connection waits for it (a user of another node, or a closed connection, waits for nothing)."""
        expected = self._expected.get(outbox)
        if expected is None or (op, key) not in expected:
            return  # nobody waits for it (the connection is gone)
        expected.discard((op, key))
        if not expected:
            del self._expected[outbox]
        self._settled.setdefault(outbox, {})[(op, key)] = result
        if self._applying:
            self._to_resume.append(outbox)  # once the event is carried out
        else:
            self.resume(outbox)

    def asked(self, outbox: Any, op: str, key: str) -> bool:
        return (op, key) in self._expected.get(outbox, ()) or (op, key) in self._settled.get(outbox, ())

    def _claim_refused(self, outbox: Any, op: str, name: str) -> Callable[[str], None]:
        """What a refused claim of NAME, for OUTBOX's request OP, answers: the
        cluster is unavailable, or the name is taken."""
        def refused(why: str) -> None:
            self._settle(outbox, op, "", unavailable() if why == "unavailable"
                         else ChatError(f"the name {name} is taken; choose another", NAME_TAKEN))
        return refused

    def _move_claim(self, user: User, op: str, name: str, event: list[Any]) -> NoReturn:
        """USER's request OP: its name's claim moves to NAME, and EVENT is appended
        with the new claim's fence (a rename, a login, a logout); wait for it."""
        bus = self._bus()
        pending = self._expect(user.outbox, op, "")
        bus.move(user.key, user.fence, name_key(name), event, self._claim_refused(user.outbox, op, name))
        raise pending

    def _release(self, user: User, reason: str, now: float) -> None:
        """USER (local) leaves: nothing more reaches its connection, and its quit
        goes through the stream with the release of its name."""
        self._make_remote(user)
        if self.bus is not None:
            self.bus.release(user.key, user.fence, ["quit", user.key, user.fence, reason, now])

    def _request(self, user: User, op: str, key: str, event: list[Any]) -> NoReturn:
        """Publish EVENT, USER's request OP on KEY, and wait for it to come back."""
        bus = self._bus()
        pending = self._expect(user.outbox, op, key)
        bus.publish(event)
        raise pending

    def _tell(self, user: User, exc: ChatError) -> None:
        """Show USER a refusal; a user of another node hears nothing from here
        (its outbox discards), so no caller needs to ask whose user it is."""
        user.send(user.renderer.error(str(exc)))

    def _carry_out_request(self, user: User, op: str, key: str, make: Callable[..., Any] | None,
                           *args: Any) -> None:
        """Carry out the request OP of USER with MAKE(self, USER, *ARGS) and keep
        its outcome for USER's connection (MAKE is None for an OP this node does
        not know: one of a newer version sent it)."""
        try:
            if make is None:
                raise ChatError(f"{op} is not known to this node", "")
            result = make(self, user, *args)
        except ChatError as exc:
            result = exc
        self._settle(user.outbox, op, key, result)

    def _sender(self, key: str, fence: int) -> User | None:
        user = self.users.get(key)
        if user is None or user.fence != fence:
            return None  # an event of a claim that ended (its node was declared lost)
        return user

    def _local(self, user: User) -> bool:
        return user.outbox is not REMOTE_OUTBOX

    def _make_remote(self, user: User) -> None:
        """Nothing more is sent to USER's connection from here on (it closed)."""
        user.outbox = REMOTE_OUTBOX
        user.send = REMOTE_OUTBOX.queue
        self.set_renderer(user, REMOTE)
        discard = REMOTE_OUTBOX.out.append
        for room in user.rooms:
            room.members[user] = discard

    def _rename_claimed(self, user: User, name: str, now: float) -> str:
        """Rename USER to NAME, whose claim the cluster moved to it: Redis decides
        who holds a name, so an account that was registered meanwhile does not stop
        it (the world must stay what Redis holds). Returns the old name."""
        account = user.account
        user.account = name_key(name)  # passes check_name's test for registered names
        try:
            return Hall.rename(self, user, name, now)
        finally:
            user.account = account

    def _release_if_gone(self, user: User, now: float) -> None:
        """If USER is this node's but its connection closed while a claim of a new
        name was on its way, that claim is given up now, with its quit (closing, it
        gave up the old one, which the claim had moved)."""
        if user.node == self.node and not self._local(user) and self.bus is not None:
            self.bus.release(user.key, user.fence, ["quit", user.key, user.fence, "", now])
