"""Ask a broker's gRPC health service whether it serves: for container health checks.

    python -m logd.server.health_check [HOST:PORT] [--service NAME] [--timeout-ms MS]

Exits 0 when the service (default ``""``, the whole broker) reports SERVING, 1 otherwise
(NOT_SERVING while recovering or shutting down, unreachable, timed out), printing one
line. The address defaults to ``$LOGD_HEALTH_ADDRESS``, else ``127.0.0.1:7070``.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:7070"


def check_health(address: str, service: str = "", timeout_ms: int = 3000) -> str:
    """The status name (``SERVING``, ``NOT_SERVING``, ...) or ``UNREACHABLE: <reason>``."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_ms / 1000)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # the broker answered: no such service
                return "SERVICE_UNKNOWN"
            return f"UNREACHABLE: {exc.code().name} {exc.details() or ''}".rstrip()
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logd.server.health_check", description=__doc__.split("\n")[0])
    parser.add_argument("address", nargs="?", default=os.environ.get("LOGD_HEALTH_ADDRESS", DEFAULT_ADDRESS))
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout-ms", type=int, default=3000)
    args = parser.parse_args(argv)
    status = check_health(args.address, args.service, args.timeout_ms)
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
