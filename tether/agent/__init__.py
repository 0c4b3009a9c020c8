"""tether-agent: the endpoint side of tether, and the SDK for writing its commands.

``from tether.agent import Agent, Context`` gives the SDK (see :mod:`tether.agent.sdk`), and
``PollResult``, ``ScheduledCommand``, ``polling_function`` the polling commands of Cortex
XSOAR's "Scheduled Commands" (see :mod:`tether.agent.polling`). The agent stays light: it
imports only the standard library, ``msgspec``, ``websockets`` and :mod:`tether.protocol`
-- never the daemon.

The daemon's refusals are :class:`~tether.protocol.errors.SessionClosed`, as for every
client (:mod:`tether.protocol.errors` draws the tree): :meth:`AgentClient.run` raises it
after a close code reconnecting cannot fix, :func:`enroll` when the enrollment is refused
(``FatalSessionError`` and ``EnrollmentError`` are older names of it).
"""

from tether.protocol.errors import SessionClosed

from .client import AgentClient, ClientSettings, FatalSessionError, NotEnrolledError
from .enrollment import EnrollmentError, enroll
from .journal import Identity, Journal
from .polling import PollResult, ScheduledCommand, polling_function
from .sdk import Agent, Command, Context

__all__ = [
    "Agent", "AgentClient", "ClientSettings", "Command", "Context", "EnrollmentError", "FatalSessionError", "Identity",
    "Journal", "NotEnrolledError", "PollResult", "ScheduledCommand", "SessionClosed", "enroll", "polling_function",
]
