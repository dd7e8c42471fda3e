"""irctest's InspIRCd controller, listening on 127.0.0.1 only.

For comparison runs (``bench/irctest/run --server inspircd``): the client
and services ports are picked on 127.0.0.1 (irctest's template binds the
address it is given). irctest's template also writes a debug log per test
to ``/tmp/ircd-<port>.log`` and never removes it; it is written to the
temporary directory instead (``bench/irctest/run`` gives each run its own
and removes it). Nothing else changes.
"""

import tempfile
from typing import Type

from irctest.controllers import inspircd

from loopback import LoopbackPorts

_LOG = 'target="/tmp/ircd-{port}.log"'
if _LOG not in inspircd.TEMPLATE_CONFIG:
    raise ImportError("irctest's InspIRCd template changed: check where it logs")
inspircd.TEMPLATE_CONFIG = inspircd.TEMPLATE_CONFIG.replace(
    _LOG, 'target="%s/ircd-{port}.log"' % tempfile.gettempdir()
)


class InspircdLoopbackController(LoopbackPorts, inspircd.InspircdController):
    pass


def get_irctest_controller_class() -> Type[InspircdLoopbackController]:
    return InspircdLoopbackController
