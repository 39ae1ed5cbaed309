"""A node of several processes: the supervisor, its worker processes, how many, and the node's one metrics endpoint."""
