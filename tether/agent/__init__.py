"""tether-agent: the endpoint side of tether, and the SDK for writing its commands.

``from tether.agent import Agent, Context`` gives the SDK (see :mod:`tether.agent.sdk`).
The agent stays light: it imports only the standard library, ``msgspec``, ``websockets``
and :mod:`tether.protocol` -- never the daemon.
"""

from .client import AgentClient, FatalSessionError, NotEnrolledError
from .enrollment import EnrollmentError, enroll
from .journal import Identity, Journal
from .sdk import Agent, Command, Context

__all__ = [
    "Agent", "AgentClient", "Command", "Context", "EnrollmentError", "FatalSessionError", "Identity",
    "Journal", "NotEnrolledError", "enroll",
]
