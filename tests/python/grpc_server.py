"""A real gRPC server for revplane's end-to-end tests (Python grpcio, no protoc).

Usage: grpc_server.py NAME [--host 127.0.0.1] [--port 0]

Serves on HOST:PORT (port 0: the kernel picks one):
  * /revplane.test.Echo/Echo, a unary method on raw bytes: the reply is b"NAME:" + request,
    so a test can tell which server answered;
  * grpc.health.v1.Health (grpcio-health-checking), SERVING for "" and revplane.test.Echo.

Prints one JSON line {"port": N} on stdout once it listens, then one line per call on
stderr. SIGTERM or SIGINT stops it gracefully (in-flight calls get 2 s to finish).
"""

import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "revplane.test.Echo"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    def echo(request, context):
        print(f"call from {context.peer()}", file=sys.stderr, flush=True)
        return args.name.encode() + b":" + request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # No serializers: the method takes and returns bytes as they are on the wire.
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(
            SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(json.dumps({"port": port}), flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
