"""The e2e suite's name for the shared broker subprocess: see ``tests/broker_process.py``."""

from broker_process import BrokerProcess, free_port

__all__ = ["BrokerProcess", "free_port"]
