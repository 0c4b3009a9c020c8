"""tether: a task broker for fleets of endpoints.

Sub-packages: :mod:`tether.protocol` (the wire, sans-I/O), :mod:`tether.daemon`
(``tetherd`` and ``tetherctl``) and :mod:`tether.agent` (``tether-agent`` and its SDK).
"""

__version__ = "0.1.0"
