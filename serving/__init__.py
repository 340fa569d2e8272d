"""What the gateway and the experiment runner both serve: one config, and its plugins.

Above `scheduling/`, `backends/` and `workloads/` (whose registries it asks for
names), below `server/` and `loadgen/` (which embed its config): both may import
it without either importing the other.
"""
