"""Rewriting stored state: TTL cleanup, offline compaction and re-sharding of snapshots."""
