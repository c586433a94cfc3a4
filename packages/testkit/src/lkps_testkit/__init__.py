"""Local doubles of the services LKPS talks to, for tests and for `lkps dev`.

Never part of a production install: the development identity provider lives here so
that a server without this distribution cannot trust it.
"""

from lkps_testkit.entra import EntraDouble, SigningKey
from lkps_testkit.server import ServerThread

__all__ = ["EntraDouble", "ServerThread", "SigningKey"]
