"""The gRPC API: the .proto, its committed stubs, the servicers and the client library."""
