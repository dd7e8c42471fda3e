"""irctest's ngIRCd controller, listening on 127.0.0.1 only.

For comparison runs (``bench/irctest/run --server ngircd``). Besides the
loopback port, irctest's ngIRCd template names the address with ``Bind``,
a key ngIRCd does not know (``ngircd --configtest``: 'Unknown variable
"Bind"'), so ngIRCd listens on every address; the template is given the
key ngIRCd reads, ``Listen``. Nothing else changes.
"""

from typing import Type

from irctest.controllers import ngircd

from loopback import LoopbackPorts

if "Bind = {hostname}" not in ngircd.TEMPLATE_CONFIG:
    raise ImportError("irctest's ngIRCd template changed: check how it binds its address")
ngircd.TEMPLATE_CONFIG = ngircd.TEMPLATE_CONFIG.replace(
    "Bind = {hostname}", "Listen = {hostname}"
)


class NgircdLoopbackController(LoopbackPorts, ngircd.NgircdController):
    pass


def get_irctest_controller_class() -> Type[NgircdLoopbackController]:
    return NgircdLoopbackController
