"""The contract node and client share: wire stubs, encodings, key groups, placement, errors. Imports neither rocksdict nor obstore."""
