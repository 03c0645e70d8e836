"""Generated gRPC stubs for logd.v1 (see scripts/gen_proto.py); shared by broker and SDK."""
