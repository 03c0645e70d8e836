"""A scripted stand-in for a broker's LogService, served on 127.0.0.1 (SDK tests that
script the broker's answers: backoffs, fetch order, request streams)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc

from logd_sdk.protocol import log_pb2_grpc


def serve_log_service(servicer: log_pb2_grpc.LogServiceServicer) -> tuple[grpc.Server, str]:
    """A started gRPC server serving ``servicer`` as LogService, and its address; the
    caller stops it (``server.stop(0)``)."""
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    log_pb2_grpc.add_LogServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"
