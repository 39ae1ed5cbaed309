"""One shard: a RocksDB instance for a key-group range, its writes, reads and local files."""
