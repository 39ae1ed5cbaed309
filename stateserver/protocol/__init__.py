"""The contract node and client share: wire stubs, encodings, key groups, placement, errors and the
table of error reasons (``reasons``: reason -> gRPC status). Imports neither rocksdict nor obstore."""
