"""The node process: gRPC services, the shard registry, checkpointing, membership, metrics, health."""
