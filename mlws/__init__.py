"""`mlws`, the command line: the outermost layer, above the gateway and the load generator.

Nothing else in the project imports this package; it wires the subcommands of
`server/`, `loadgen/`, `predictor/`, `backends/` and `workloads/` together.
"""
