"""Integration tests: the real service over gRPC against the real KasPro sandbox."""
