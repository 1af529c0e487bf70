"""Calls a gRPC server once per target and prints each outcome as one JSON line.

Usage: grpc_call.py [--timeout SECONDS] [--authority HOST:PORT] TARGET...

TARGET is any grpcio target: `xds:///greeter.demo.svc.cluster.local:50051` (proxyless: the
xDS bootstrap comes from GRPC_XDS_BOOTSTRAP, as a real client's would), or `127.0.0.2:50051`
(through a sidecar's listener; pass --authority with the service's name, as a client calling
the service by name would send it). Calls /revplane.test.Echo/Echo (grpc_server.py) with
b"ping", no wait_for_ready, and prints per target:

  {"target": ..., "code": "OK" | "UNAVAILABLE" | ..., "details": str | null, "reply": str | null}

All targets share one process, hence one xDS client. The exit code is 0 whatever the calls
returned: the test judges the outcome.
"""

import argparse
import json

import grpc


def call(target, timeout, authority):
    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(target, options=options) as channel:
        echo = channel.unary_unary("/revplane.test.Echo/Echo")
        try:
            reply = echo(b"ping", timeout=timeout)
            return {"code": "OK", "details": None, "reply": reply.decode()}
        except grpc.RpcError as error:
            return {"code": error.code().name, "details": error.details(), "reply": None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--authority")
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args()
    for target in args.targets:
        outcome = {"target": target, **call(target, args.timeout, args.authority)}
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
