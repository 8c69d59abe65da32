"""Generated protobuf and gRPC stubs for the troupe.v1 protocol (proto/troupe/v1/*.proto).

Do not edit the *_pb2* files by hand: regenerate them with python/scripts/gen_stubs.sh.
"""
