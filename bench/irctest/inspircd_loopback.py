"""irctest's InspIRCd controller, listening on 127.0.0.1 only.

For comparison runs (``bench/irctest/run --server inspircd``): the client
and services ports are picked on 127.0.0.1 (irctest's template binds the
address it is given). Nothing else changes.
"""

from typing import Type

from irctest.controllers import inspircd

from loopback import LoopbackPorts


class InspircdLoopbackController(LoopbackPorts, inspircd.InspircdController):
    pass


def get_irctest_controller_class() -> Type[InspircdLoopbackController]:
    return InspircdLoopbackController
