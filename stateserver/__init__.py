"""stateserver: a disaggregated keyed-state backend for stream processing (the node)."""
