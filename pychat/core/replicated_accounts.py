"""A cluster node's requests on accounts and server operators. A password is
checked, and a new one hashed, on the node it is typed on; the account's
change then travels through the stream and every node makes it. A login or
logout moves the user's name claim like a rename. Server operators' kills
and bans reach every node, and each node sends away its own users."""

from __future__ import annotations

from typing import Any, Callable, NoReturn

from pychat.core.errors import NO_SUCH_ACCOUNT, NO_SUCH_USER, ChatError
from pychat.core.model import User
from pychat.core.passwords import CHECK_COST, hash_password
from pychat.core.records import Account
from pychat.core.replicated_base import NO_OUTCOME, StreamHall


class AccountRequests(StreamHall):
    """Accounts and server operators, through the stream."""

    # -- accounts ---------------------------------------------------------------------
    # A password is checked on the node it was typed on, within that node's
    # budgets, and a new one is hashed there, once: what every node makes is the
    # account's change, with that hash (see _ACCOUNT_OPS).

    def _account_request(self, user: User, op: str, args: list[Any], now: float) -> NoReturn:
        self._request(user, op, "", ["acct", op, user.key, user.fence, args, now])

    def register_account(self, user: User, password: str, now: float) -> Account:
        done = self._outcome(user.outbox, "register", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        self._may_register(user)
        self._check_new_password(password)
        self._bus()  # before the hash is paid for
        self._spend_slow_check(user.address, now, CHECK_COST, "password")
        self._account_request(user, "register", [hash_password(password)], now)

    def change_password(self, user: User, old: str, new: str, now: float) -> None:
        if self._outcome(user.outbox, "password", "") is not NO_OUTCOME:
            return
        account = self._own_account(user)
        self._check_new_password(new)
        self._bus()
        self._check_password(account, old, user.address, now, hashes=2)
        self._account_request(user, "password", [hash_password(new)], now)

    def unregister(self, user: User, password: str, now: float) -> None:
        if self._outcome(user.outbox, "unregister", "") is not NO_OUTCOME:
            return
        account = self._own_account(user)
        self._bus()
        self._check_password(account, password, user.address, now)
        self._account_request(user, "unregister", [], now)

    def ignore(self, user: User, name: str) -> str:
        if self._applying:
            return super().ignore(user, name)
        done = self._outcome(user.outbox, "ignore", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        self._account_request(user, "ignore", [name], 0.0)  # kept for its account on every node

    def unignore(self, user: User, name: str) -> None:
        if self._applying:
            super().unignore(user, name)
            return
        if self._outcome(user.outbox, "unignore", "") is not NO_OUTCOME:
            return
        self._account_request(user, "unignore", [name], 0.0)

    def login(self, user: User, name: str, password: str, now: float) -> tuple[Account, str]:
        """The password is checked here; the user then moves to the account's name
        (a claim, like a rename), and every node logs it in (see _apply_login)."""
        done = self._outcome(user.outbox, "login", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        self._may_log_in(user)
        self._bus()  # before the password is checked
        account = self.authenticate(name, password, user.address, now)
        self._check_holder(user, account)
        if account.key == user.key:  # the name is this user's already: no claim to move
            self._account_request(user, "login", [account.key], now)
        self._move_claim(user, "login", account.name, ["login", user.key, account.key, account.name, now])

    def logout(self, user: User, now: float) -> str:
        """The user moves to a guest name (a claim, like a rename), logged out on every node."""
        done = self._outcome(user.outbox, "logout", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        self._own_account(user)
        guest = self.guest_name()
        self._move_claim(user, "logout", guest, ["logout", user.key, guest, now])

    # -- server operators ------------------------------------------------------------
    # Made by every node; each node sends away its own users (_send_away), and
    # their quits come back through the stream like any other.

    def _oper_request(self, oper: User, op: str, args: list[Any], now: float) -> NoReturn:
        self._request(oper, op, "", ["oper", op, oper.key, oper.fence, args, now])

    def grant_oper(self, user: User, account: Account) -> None:
        if self._applying:
            super().grant_oper(user, account)
            return
        if self._outcome(user.outbox, "grant", "") is not NO_OUTCOME:
            return
        if account.key not in self.opers:
            super().grant_oper(user, account)  # its refusal
        self._oper_request(user, "grant", [account.key], 0.0)

    def drop_oper(self, user: User) -> None:
        """Made on every node when it comes back (here too: until then, what this
        user asked before is carried out with the status it had)."""
        if self._applying:
            super().drop_oper(user)
            return
        self._bus().publish(["oper", "drop", user.key, user.fence, [], 0.0])

    def kill(self, oper: User, target_name: str, reason: str, now: float) -> User:
        if self._applying:
            return super().kill(oper, target_name, reason, now)
        done = self._outcome(oper.outbox, "kill", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        self._require_oper(oper)
        target = self.user_named(target_name)
        self._oper_request(oper, "kill", [target.key, target.fence, reason], now)

    def kline(self, oper: User, mask: str, duration: float | None, reason: str, now: float) -> list[User]:
        if self._applying:
            return super().kline(oper, mask, duration, reason, now)
        done = self._outcome(oper.outbox, "kline", "")
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        self._require_oper(oper)
        self._kline_network(mask)
        self._oper_request(oper, "kline", [mask, duration, reason], now)

    def unkline(self, oper: User, mask: str) -> None:
        if self._applying:
            super().unkline(oper, mask)
            return
        if self._outcome(oper.outbox, "unkline", "") is not NO_OUTCOME:
            return
        self._require_oper(oper)
        self._oper_request(oper, "unkline", [mask], 0.0)

    def wall(self, oper: User, text: str, now: float) -> None:
        if self._applying:
            super().wall(oper, text, now)
            return
        self._require_oper(oper)
        self._bus().publish(["oper", "wall", oper.key, oper.fence, [text], now])

    def _send_away(self, user: User, told: str, reason: str, now: float) -> None:
        if not self._local(user):
            return  # its own node sends it away; its quit comes through the stream
        user.send(user.renderer.error(told))
        outbox = user.outbox
        self._release(user, reason, now)
        outbox.disconnect()

    def _apply_acct(self, node: str, fence: int, event: list[Any]) -> None:
        _, op, key, user_fence, args, now = event
        user = self._sender(key, user_fence)
        if user is None:
            return
        self._carry_out_request(user, op, "", _ACCOUNT_OPS.get(op), args, now)

    def _apply_oper(self, node: str, fence: int, event: list[Any]) -> None:
        _, op, key, user_fence, args, now = event
        oper = self._sender(key, user_fence)
        if oper is None:
            return
        try:
            if op == "grant":
                account = self.accounts.get(args[0])
                if account is None:
                    raise ChatError("that account was just deleted", NO_SUCH_ACCOUNT)
                self.grant_oper(oper, account)
                result: Any = None
            elif op == "kill":
                target = self._sender(args[0], args[1])  # the one asked for, not a later holder of its name
                if target is None:
                    raise ChatError("that user has left", NO_SUCH_USER)
                result = self.kill(oper, target.name, args[2], now)
            elif op == "kline":
                result = self.kline(oper, args[0], args[1], args[2], now)
            elif op == "unkline":
                self.unkline(oper, args[0])
                result = None
            elif op == "wall":
                self.wall(oper, args[0], now)
                return
            elif op == "drop":
                self.drop_oper(oper)
                return
            else:
                raise ChatError(f"{op} is not known to this node", "")
        except ChatError as exc:
            result = exc
        self._settle(oper.outbox, op, "", result)

    def _apply_login(self, node: str, fence: int, event: list[Any]) -> None:
        """A user's claim moved to an account's name: it takes the name, and is
        logged in if the account is still there."""
        _, key, account_key, name, now = event
        user = self.users.get(key)
        if user is None or user.node != node:
            return
        account = self.accounts.get(account_key)
        try:
            old = self._rename_claimed(user, name, now)
        except ChatError as exc:
            result: Any = exc
        else:
            user.fence = fence
            if account is not None:
                self._logged_in(user, account.key)
                result = (account, old)
            else:
                result = ChatError(f"the account {name} was just deleted", NO_SUCH_ACCOUNT)
        self._settle(user.outbox, "login", "", result)
        if user.fence == fence:  # renamed: the claim it holds now is the moved one
            self._release_if_gone(user, now)

    def _apply_logout(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, guest, now = event
        user = self.users.get(key)
        if user is None or user.node != node:
            return
        if user.account is not None:
            self._logged_out(user)
        try:
            result: Any = self._rename_claimed(user, guest, now)
        except ChatError as exc:
            result = exc
        else:
            user.fence = fence
        self._settle(user.outbox, "logout", "", result)
        if user.fence == fence:  # renamed: the claim it holds now is the moved one
            self._release_if_gone(user, now)


def _register(hall: AccountRequests, user: User, args: list[Any], now: float) -> Account:
    hall._may_register(user)
    return hall._create_account(user, args[0], now)


def _log_in_here(hall: AccountRequests, user: User, args: list[Any], now: float) -> tuple[Account, str]:
    """A login to the account of the name the user has already."""
    account = hall.accounts.get(args[0])
    if account is None:
        raise ChatError("that account was just deleted", NO_SUCH_ACCOUNT)
    hall._may_log_in(user)
    hall._logged_in(user, account.key)
    return account, user.name


# An account request (ReplicatedHall._account_request) as every node makes it;
# the password was checked, and a new one hashed, where it was typed.
_ACCOUNT_OPS: dict[str, Callable[[AccountRequests, User, list[Any], float], Any]] = {
    "register": _register,
    "login": _log_in_here,
    "password": lambda hall, user, args, now: hall._set_password(hall._own_account(user), args[0]),
    "unregister": lambda hall, user, args, now: hall._delete_account(user, hall._own_account(user)),
    "ignore": lambda hall, user, args, now: hall.ignore(user, args[0]),
    "unignore": lambda hall, user, args, now: hall.unignore(user, args[0]),
}
