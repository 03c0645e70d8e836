"""gRPC servicers: validate, call one domain method, translate (see app.py for the server)."""

from .app import BrokerServer, serve
from .config import ServerConfigError, load_server_config

__all__ = ["BrokerServer", "serve", "ServerConfigError", "load_server_config"]
