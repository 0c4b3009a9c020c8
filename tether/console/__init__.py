"""tetherctl, the admin console of tetherd, and the console client library it is built on.

``from tether.console import ConsoleClient`` opens a ``console`` session and calls RPC
methods (benchmarks and tests use it too); :mod:`.cli` is the ``tetherctl`` command.
Like the agent, the console needs only the standard library, msgspec, websockets and
:mod:`tether.protocol` (never the daemon extra).
"""

from tether.protocol.errors import DaemonError, RequestRefused, SessionClosed

from .client import CannotConnect, ConsoleClient, ConsoleError, RequestError, exit_code

__all__ = ["CannotConnect", "ConsoleClient", "ConsoleError", "DaemonError", "RequestError", "RequestRefused",
           "SessionClosed", "exit_code"]
