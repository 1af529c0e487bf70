#!/usr/bin/env python3
"""Writes the binary seed inputs of the fuzz targets (protobuf encoded by hand, so that no
protobuf package is needed). The manifest and AdmissionReview seeds are plain text files
beside this script; deploy/examples/mesh is used as manifest seeds too."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, payload):
    """A length-delimited field."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def struct_of(fields):
    """google.protobuf.Struct of string values (or raw Value bytes)."""
    out = b""
    for key, value in fields.items():
        v = value if isinstance(value, bytes) else field(3, value)  # Value.string_value
        out += field(1, field(1, key) + field(2, v))
    return out


def node(node_id, metadata, user_agent=""):
    out = field(1, node_id) + field(2, "shop.shop") + field(3, struct_of(metadata))
    if user_agent:
        out += field(6, user_agent)
    return out


def request(type_url, node_bytes=None, names=(), version="", nonce=""):
    out = field(1, version) if version else b""
    if node_bytes is not None:
        out += field(2, node_bytes)
    for n in names:
        out += field(3, n)
    out += field(4, type_url)
    if nonce:
        out += field(5, nonce)
    return out


def framed(message):
    return b"\0" + struct.pack(">I", len(message)) + message


def write(target, name, data):
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


SIDECAR = "sidecar~10.0.0.1~frontend-7d4b9.shop~shop.svc.cluster.local"
nodes = {
    "canary": node(SIDECAR, {"REVISION": "canary", "NAMESPACE": "shop", "POD_NAME": "frontend-7d4b9",
                             "INTERCEPTION_MODE": "NONE"}),
    "stable": node(SIDECAR, {"REVISION": "stable"}),
    "no-revision": node(SIDECAR, {"NAMESPACE": "shop"}),
    "bad-revision": node(SIDECAR, {"REVISION": "Not_A_Label!"}),
    "number-revision": node(SIDECAR, {"REVISION": varint(2 << 3 | 1) + struct.pack("<d", 1.5)}),
    "grpc": node("grpc-client", {"REVISION": "canary", "GENERATOR": "grpc"}, "gRPC Go"),
}
for name, data in nodes.items():
    write("node_identity", name, data)

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
first = framed(request(CDS, nodes["canary"]))
ack = framed(request(CDS, version="v1", nonce="1"))
eds = framed(request(EDS, names=["outbound|80||frontend.shop.svc.cluster.local"]))
# The first byte of a discovery_request input picks the chunk size.
write("discovery_request", "first", b"\x03" + first)
write("discovery_request", "stream", b"\x07" + first + ack + eds)
write("discovery_request", "cut-short", b"\x00" + first + ack[:9])
write("discovery_request", "compressed", b"\x01" + b"\x01" + first[1:])
