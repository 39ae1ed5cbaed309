"""Who owns a shard at which epoch: ownership records in object storage, fencing, epoch allocation."""
