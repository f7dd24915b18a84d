"""Pure domain values and rules: no I/O, no grpc, no KasPro field names."""
