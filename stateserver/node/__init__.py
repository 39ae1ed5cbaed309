"""A node of several worker processes: the supervisor, the worker entry point, and their layout."""
