"""Lanes: the workers that run the scheduling core's dispatches.

A lane owns loaded runners (one per model × backend × precision) with its own
intra-op thread count, and runs one dispatch at a time. Its kind is a module:

- `base`: what every kind shares (specs, the batch and result, errors, `Lane`);
- `runners`, `priority`: the worker-side code every kind runs (`RunnerSet`);
- `thread_lane`: a single-thread executor in the server process;
- `process_lane`, `process_worker`, `messages`, `shm`: a spawned worker process,
  dataclass messages on its pipe, tensors through shared memory;
- `ray_lane`, `ray_actor`, `ray_cluster`, `model_files`: a Ray actor on some
  node of a Ray cluster, tensors (and the model files a node lacks) through Ray's
  object store; the gateway's connection to the cluster;
- `pool`: `LaneWorkers`, every lane as one pool; `build`: the configured lanes;
  `export`: ONNX export once, in the parent, before any worker starts.

Whether a lane holds a dispatch, and how many samples a dispatch may carry, are
the scheduling core's answers (`Scheduler.lane_busy`, `Scheduler.largest_dispatch`);
lanes keep no copy of either. Nothing here imports FastAPI or torch at import
time: spawned workers import these modules. This file imports nothing, so that a
worker importing one module does not import them all.
"""
