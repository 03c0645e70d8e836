"""logd: a Kafka-style partitioned commit-log service (the broker side)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("logd")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
