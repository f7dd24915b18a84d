"""Benchmarks of the wallet service against the ceiling of Python gRPC (``make bench``)."""
