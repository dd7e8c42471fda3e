"""Accounts, ignore lists and server operators: the Hall's part that knows who is who.

A name becomes an account with a password (stored only as an scrypt hash,
pychat.core.passwords). From then on that name, and every name that looks
like it (the same look-alike key), is reserved: only a login gives it.
Checking a password is slow on purpose, so each check draws from the same
budgets as room keys (per address, server-wide, failures doubling the
wait) and from a budget per account, so that guesses spread over many
addresses still go nowhere.

Server operators are accounts named with ``--oper``; once logged in they may
kill, kline and wall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, NamedTuple

from pychat.core.errors import (BAD_ARGUMENT, BAD_PASSWORD, NAME_REGISTERED, NO_SUCH_ACCOUNT, NO_SUCH_USER,
                                NOT_LOGGED_IN, NOT_SERVER_OPERATOR, TRY_LATER, ChatError)
from pychat.core.events import Wall
from pychat.core.limits import KeyedBuckets, Rate, seconds_text
from pychat.core.masks import network
from pychat.core.passwords import CHECK_COST, hash_password, password_problem, verify_password
from pychat.core.records import Account
from pychat.core.text import MAX_TYPED, clip, name_key

if TYPE_CHECKING:
    from pychat.core.history import HistoryStore
    from pychat.core.limits import HallLimits
    from pychat.core.model import Renderer, Room, User

# Logins to one account, from anywhere: five at once, then one every ten
# seconds; each wrong password in a row doubles the wait (as for addresses).
ACCOUNT_LOGINS = Rate(5, 1 / 10)
IGNORES_MAX = 100  # names one user may ignore
FAILURES_MAX = 64.0
_NOBODY: frozenset = frozenset()


class Kline(NamedTuple):
    """A server ban of an address or network."""

    by: str
    at: float
    expires: float | None
    reason: str


class AccountsMixin:
    """Accounts and server operators, over the Hall's state."""

    # The Hall's state this part uses.
    users: dict[str, User]
    rooms: dict[str, Room]
    history: HistoryStore
    limits: HallLimits

    if TYPE_CHECKING:  # the Hall's (and ModerationMixin's) methods this part calls
        def _spend_slow_check(self, address: str, now: float, cost: float = 1.0, what: str = "key") -> None: ...
        def _wrong_key(self, address: str, now: float) -> None: ...
        def rename(self, user: User, new_name: str, now: float) -> str: ...
        def guest_name(self) -> str: ...
        def quit(self, user: User, reason: str, now: float) -> None: ...
        def _restore_roles(self, user: User, room: Room) -> None: ...
        def _drop_account_roles(self, user: User, room: Room) -> None: ...
        def user_named(self, name: str) -> User: ...

    def _load_accounts(self, opers: Iterable[str]) -> None:
        self.accounts: dict[str, Account] = {key: Account(key, name, hashed, created)
                                             for key, name, hashed, created in self.history.accounts()}
        self.opers = {name_key(name) for name in opers}
        self.klines: dict[str, Kline] = {mask: Kline(by, at, expires, reason)
                                         for mask, by, at, expires, reason in self.history.klines()}
        # name key -> the users ignoring that name (shared with each user's ignored_by)
        self.ignorers: dict[str, set[User]] = {}
        self.account_ignores: dict[str, set[str]] = {}
        for account, ignored in self.history.ignores():
            self.account_ignores.setdefault(account, set()).add(ignored)
        self._logins = KeyedBuckets(ACCOUNT_LOGINS)
        self._login_failures: dict[str, int] = {}

    # -- passwords ----------------------------------------------------------

    def _check_password(self, account: Account, password: str, address: str, now: float,
                        hashes: int = 1) -> None:
        """Verify PASSWORD for ACCOUNT within the budgets, or raise ChatError.

        HASHES > 1 pays for the hashes the caller makes next as well, in one
        go: a request must be paid for whole before anything is done, so that
        one held for the server's budget (Busy) can be tried again as it was.
        """
        wait = self._logins.wait(account.key, now)
        if wait > 0:
            raise ChatError(f"too many logins to {account.name}; try again in {seconds_text(wait)}", TRY_LATER)
        self._spend_slow_check(address, now, CHECK_COST * hashes, "password")
        self._logins.take(account.key, now)
        if not verify_password(password, account.password_hash):
            self._wrong_key(address, now)
            failures = self._login_failures.get(account.key, 0) + 1
            if len(self._login_failures) > 10_000:
                self._login_failures.clear()
            self._login_failures[account.key] = failures
            if failures > 1:  # each wrong password in a row doubles the account's wait
                bucket = self._logins.bucket(account.key, now)
                bucket.charge(min(FAILURES_MAX, 2.0 ** (failures - 1)) - 1, floor=-FAILURES_MAX)
            raise ChatError(f"wrong password for {account.name}", BAD_PASSWORD)
        self._login_failures.pop(account.key, None)

    def account_for(self, name: str) -> Account | None:
        """The account NAME (or a name that looks like it) belongs to, if registered."""
        return self.accounts.get(name_key(name)) if len(name) <= MAX_TYPED else None

    def authenticate(self, name: str, password: str, address: str, now: float) -> Account:
        """The account NAME if PASSWORD is its password (budgeted), else ChatError."""
        account = self.account_for(name)
        if account is None:
            raise ChatError(f"no account is called {clip(name)}", NO_SUCH_ACCOUNT)
        self._check_password(account, password, address, now)
        return account

    # -- an account's life --------------------------------------------------

    def register_account(self, user: User, password: str, now: float) -> Account:
        """Make USER's name an account with PASSWORD; USER is logged in to it."""
        self._may_register(user)
        self._check_new_password(password)
        self._spend_slow_check(user.address, now, CHECK_COST, "password")  # hashing costs a check
        return self._create_account(user, hash_password(password), now)

    def _may_register(self, user: User) -> None:
        if user.account is not None:
            raise ChatError(f"you are logged in as {self.accounts[user.account].name}", NAME_REGISTERED)
        if user.key in self.accounts:
            raise ChatError(f"the name {user.name} is registered already", NAME_REGISTERED)

    @staticmethod
    def _check_new_password(password: str) -> None:
        problem = password_problem(password)
        if problem:
            raise ChatError(problem, BAD_ARGUMENT)

    def _create_account(self, user: User, password_hash: str, now: float) -> Account:
        """USER's name becomes an account with PASSWORD_HASH, and USER is logged in to it."""
        account = Account(user.key, user.name, password_hash, now)
        self.accounts[account.key] = account
        self.history.save_account(account.key, account.name, account.password_hash, account.created)
        self._logged_in(user, account.key)
        return account

    def login(self, user: User, name: str, password: str, now: float) -> tuple[Account, str]:
        """Log USER in to the account NAME; USER takes the account's name.
        Returns the account and USER's name before."""
        self._may_log_in(user)
        account = self.authenticate(name, password, user.address, now)
        self._check_holder(user, account)
        old = user.name
        user.account = account.key  # so that the account's name is free for this user
        try:
            if user.name != account.name:
                self.rename(user, account.name, now)
        except ChatError:
            user.account = None
            raise
        self._logged_in(user, account.key)
        return account, old

    def _may_log_in(self, user: User) -> None:
        if user.account is not None:
            raise ChatError(f"you are logged in as {self.accounts[user.account].name}; /logout first",
                            NAME_REGISTERED)

    def _check_holder(self, user: User, account: Account) -> None:
        holder = self.users.get(account.key)
        if holder is not None and holder is not user:
            raise ChatError(f"{holder.name} is online with that account's name", NAME_REGISTERED)

    def logout(self, user: User, now: float) -> str:
        """Log USER out; it keeps chatting under a guest name (the account's is reserved)."""
        if user.account is None:
            raise ChatError("you are not logged in", NOT_LOGGED_IN)
        self._logged_out(user)
        return self.rename(user, self.guest_name(), now)

    def change_password(self, user: User, old: str, new: str, now: float) -> None:
        account = self._own_account(user)
        self._check_new_password(new)
        self._check_password(account, old, user.address, now, hashes=2)  # the new one is hashed too
        self._set_password(account, hash_password(new))

    def _set_password(self, account: Account, password_hash: str) -> None:
        changed = account._replace(password_hash=password_hash)
        self.accounts[account.key] = changed
        self.history.save_account(changed.key, changed.name, changed.password_hash, changed.created)

    def unregister(self, user: User, password: str, now: float) -> None:
        """Delete USER's account (after its password): its name is free, its rooms unowned."""
        account = self._own_account(user)
        self._check_password(account, password, user.address, now)
        self._delete_account(user, account)

    def _delete_account(self, user: User, account: Account) -> None:
        self._logged_out(user)
        del self.accounts[account.key]
        self.account_ignores.pop(account.key, None)
        for room in self.rooms.values():
            room.op_accounts.discard(account.key)
            room.voice_accounts.discard(account.key)
            if room.owner == account.key:
                room.owner = None
        self.history.delete_account(account.key)

    def _own_account(self, user: User) -> Account:
        if user.account is None:
            raise ChatError("you are not logged in", NOT_LOGGED_IN)
        return self.accounts[user.account]

    def _logged_in(self, user: User, account: str) -> None:
        """USER now holds ACCOUNT: its operator status, ignore list and room roles come with it."""
        user.account = account
        user.oper = account in self.opers
        for name in self.account_ignores.get(account, ()):
            self._ignore(user, name)
        for room in user.rooms:
            self._restore_roles(user, room)

    def _logged_out(self, user: User) -> None:
        for room in user.rooms:
            self._drop_account_roles(user, room)
        for name in list(user.ignoring):
            self._unignore(user, name)
        user.account = None
        user.oper = False

    # -- ignore lists -------------------------------------------------------

    def ignore(self, user: User, name: str) -> str:
        """USER stops seeing NAME's messages (kept for USER's account). Returns the name as shown."""
        if len(name) > MAX_TYPED:
            raise ChatError(f"no such user: {clip(name)}", NO_SUCH_USER)
        key = name_key(name)
        if key == user.key:
            raise ChatError("you cannot ignore yourself", BAD_ARGUMENT)
        if key in user.ignoring:
            raise ChatError(f"you ignore {name} already", BAD_ARGUMENT)
        if len(user.ignoring) >= IGNORES_MAX:
            raise ChatError(f"you ignore {IGNORES_MAX} names already", BAD_ARGUMENT)
        self._ignore(user, key)
        if user.account is not None:
            self.account_ignores.setdefault(user.account, set()).add(key)
            self.history.save_ignore(user.account, key, True)
        target = self.users.get(key)
        return target.name if target is not None else name

    def ignored_names(self, user: User) -> list[str]:
        """USER's ignore list: names as shown when online, else as kept."""
        return [self.users[key].name if key in self.users else key for key in user.ignoring]

    def unignore(self, user: User, name: str) -> None:
        key = name_key(name) if len(name) <= MAX_TYPED else ""
        if key not in user.ignoring:
            raise ChatError(f"you do not ignore {clip(name)}", BAD_ARGUMENT)
        self._unignore(user, key)
        if user.account is not None:
            self.account_ignores.get(user.account, set()).discard(key)
            self.history.save_ignore(user.account, key, False)

    def _ignore(self, user: User, key: str) -> None:
        user.ignoring.add(key)
        ignorers = self.ignorers.setdefault(key, set())
        ignorers.add(user)
        target = self.users.get(key)
        if target is not None:
            target.ignored_by = ignorers

    def _unignore(self, user: User, key: str) -> None:
        user.ignoring.discard(key)
        self._drop_ignorer(user, key)

    def _drop_ignorer(self, user: User, key: str) -> None:
        """USER no longer ignores the name KEY; with nobody left ignoring it, fan-out stops checking."""
        ignorers = self.ignorers.get(key)
        if ignorers is not None:
            ignorers.discard(user)
            if not ignorers:
                del self.ignorers[key]
                target = self.users.get(key)
                if target is not None:
                    target.ignored_by = _NOBODY

    def _watch_ignorers(self, user: User) -> None:
        """USER has a (new) name: fan-out skips those who ignore that name."""
        user.ignored_by = self.ignorers.get(user.key, _NOBODY)

    def _stop_ignoring(self, user: User) -> None:
        """USER leaves: its own ignore list goes (an account's stays stored)."""
        for key in list(user.ignoring):
            self._drop_ignorer(user, key)

    # -- server operators --------------------------------------------------

    def grant_oper(self, user: User, account: Account) -> None:
        """USER, who gave ACCOUNT's password (IRC's OPER), becomes a server
        operator if ACCOUNT is one of --oper."""
        if account.key not in self.opers:
            raise ChatError("No O-lines for your host", NOT_SERVER_OPERATOR)
        user.oper = True

    def drop_oper(self, user: User) -> None:
        """USER gives up its server operator status (IRC's MODE NICK -o)."""
        user.oper = False

    def _require_oper(self, user: User) -> None:
        if not user.oper:
            raise ChatError("only server operators may do that", NOT_SERVER_OPERATOR)

    def kill(self, oper: User, target_name: str, reason: str, now: float) -> User:
        """Disconnect someone; everyone who shared a room with them is told."""
        self._require_oper(oper)
        target = self.user_named(target_name)
        why = f"killed by {oper.name}" + (f": {reason}" if reason else "")
        self._send_away(target, f"you were {why}", why, now)
        return target

    def _send_away(self, user: User, told: str, reason: str, now: float) -> None:
        """USER is told TOLD and disconnected; the rooms it was in see it quit for REASON."""
        user.send(user.renderer.error(told))
        self.quit(user, reason, now)
        user.outbox.disconnect()

    def kline(self, oper: User, mask: str, duration: float | None, reason: str, now: float) -> list[User]:
        """Ban an address or network from the server; its users are disconnected."""
        self._require_oper(oper)
        net = self._kline_network(mask)
        expires = now + duration if duration else None
        kline = Kline(oper.name, now, expires, reason or "banned from this server")
        self.klines[net] = kline
        self.history.save_kline(net, kline.by, kline.at, kline.expires, kline.reason)
        gone = [user for user in self.users.values() if self._klined(net, user.address)]
        for user in gone:
            self._send_away(user, f"you are banned from this server: {kline.reason}", "banned from this server", now)
        return gone

    @staticmethod
    def _kline_network(mask: str) -> str:
        """The network MASK names, as server bans are kept; ChatError if it cannot be banned."""
        net = network(mask)
        if net is None:
            raise ChatError(f"not an address or network: {clip(mask)} (1.2.3.4, 1.2.3.0/24)", BAD_ARGUMENT)
        if net.num_addresses > 2 ** 24 and net.version == 4 or net.prefixlen < 32 and net.version == 6:
            raise ChatError(f"{net} is too wide a network to ban", BAD_ARGUMENT)
        return str(net)

    def unkline(self, oper: User, mask: str) -> None:
        self._require_oper(oper)
        net = network(mask)
        if net is None or str(net) not in self.klines:
            raise ChatError(f"no server ban for {clip(mask)}", BAD_ARGUMENT)
        del self.klines[str(net)]
        self.history.delete_kline(str(net))

    def kline_for(self, address: str, now: float) -> Kline | None:
        """The server ban covering ADDRESS (as per-address limits count it), if any."""
        if not self.klines:
            return None
        for mask, kline in list(self.klines.items()):
            if kline.expires is not None and kline.expires <= now:
                del self.klines[mask]
                self.history.delete_kline(mask)
            elif self._klined(mask, address):
                return kline
        return None

    @staticmethod
    def _klined(mask: str, address: str) -> bool:
        net, theirs = network(mask), network(address)
        return net is not None and theirs is not None and net.version == theirs.version and net.overlaps(theirs)

    def wall(self, oper: User, text: str, now: float) -> None:
        """A server operator's message to everyone online."""
        self._require_oper(oper)
        event = Wall(now, oper.name, oper.prefix, text)
        rendered: dict[Renderer, bytes] = {}
        for member in self.users.values():
            if not member.wallops and member is not oper:
                continue
            data = rendered.get(member.renderer)
            if data is None:
                data = rendered[member.renderer] = member.renderer.wall(event)
            member.send(data)
