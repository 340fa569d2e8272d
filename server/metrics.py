"""Prometheus metrics of one gateway, through one sink.

Every series the dashboards and alert rules in ``dashboards/`` query is defined here and
nowhere else. Each `GatewayMetrics` owns its own `CollectorRegistry`, never the
process-global default, so several apps (tests, benchmarks) live in one process without
"duplicated timeseries" errors.

Accounting rule, so that nothing is counted twice: call `observe_completion` once for
every finished `Job` (whatever its outcome), and `count_request` only for requests that
never became a Job (invalid input, unknown model, refused at admission before a Job was
built). `observe_completion` counts the request itself.

Label values are bounded: classes and outcomes are checked against fixed sets, and model
names not registered with `register_model` are reported as ``model="unknown"`` so that
clients sending arbitrary names cannot create series without bound.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from scheduling.job import JOB_CLASSES, Job

#: Request outcomes counted by `mlws_requests_total` ("invalid": refused before a Job).
OUTCOMES: tuple[str, ...] = ("ok", "rejected", "shed", "error", "cancelled", "invalid")
#: Model label for names that were never registered.
UNKNOWN_MODEL = "unknown"
#: Latency buckets (seconds): fine around the 100 ms interactive and 1 s batch SLOs, so
#: that attainment read off a bucket boundary is close to exact.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.125, 0.15,
    0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
#: Micro-batch size buckets (samples).
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Why a request was refused at admission (`mlws_rejections_total`).
REJECTION_REASONS: tuple[str, ...] = ("predicted_late", "queue_full", "too_large", "unavailable")
#: Why a request was refused by access control (`mlws_auth_failures_total`, server/auth.py).
AUTH_FAILURE_REASONS: tuple[str, ...] = ("missing_token", "invalid_token", "wrong_role")
#: Actual ÷ predicted completion (arrival to end): 1 = the forecast was exact.
COMPLETION_RATIO_BUCKETS: tuple[float, ...] = (
    0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0,
)  # fmt: skip


class GatewayMetrics:
    """The gateway's Prometheus series, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create every metric in `registry` (a fresh one if None)."""
        self.registry: CollectorRegistry = registry if registry is not None else CollectorRegistry()
        self._models: set[str] = set()
        reg = self.registry
        self._create_request_metrics(reg)
        self._create_lane_metrics(reg)
        self._create_admission_metrics(reg)
        self._create_swap_metrics(reg)
        self.auth_failures = self._auth_failures_counter()
        # Series without a model label exist from the start.
        for job_class in JOB_CLASSES:
            self.queue_depth.labels(job_class).set(0)
            self.slo_violations.labels(job_class)
            self.completion_ratio.labels(job_class)
        self._register(UNKNOWN_MODEL, with_latency=False)

    def _create_request_metrics(self, reg: CollectorRegistry) -> None:
        """Latency histograms, queue and token state, outcomes by request."""
        self.request_duration = Histogram(
            "mlws_request_duration_seconds",
            "End-to-end latency of successful requests, arrival to completion.",
            ["model", "class"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "mlws_queue_wait_seconds",
            "Time successful requests waited, arrival to the start of their first part.",
            ["model", "class"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.service = Histogram(
            "mlws_service_seconds",
            "Time successful requests ran, start of their first part to end of their last.",
            ["model", "class"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.microbatch_size = Histogram(
            "mlws_microbatch_size_samples",
            "Samples per dispatched micro-batch.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge(
            "mlws_queue_depth", "Jobs waiting in the queue, per class.", ["class"], registry=reg
        )
        self.tokens_in_use = Gauge(
            "mlws_tokens_in_use", "Memory tokens held by running micro-batches.", registry=reg
        )
        self.tokens_capacity = Gauge(
            "mlws_tokens_capacity", "Memory tokens available in total.", registry=reg
        )
        self.slo_violations = Counter(
            "mlws_slo_violations_total",
            "Finished jobs that did not complete ok within their SLO (late, shed, failed...).",
            ["class"],
            registry=reg,
        )
        self.requests = Counter(
            "mlws_requests_total",
            "Requests by final outcome.",
            ["model", "class", "outcome"],
            registry=reg,
        )

    def _create_lane_metrics(self, reg: CollectorRegistry) -> None:
        """Each lane's state, labelled by its node, and dispatches lost with a node."""
        self.lane_busy = Gauge(
            "mlws_lane_busy",
            "1 while the lane runs a micro-batch, else 0; node: where the lane runs "
            '("local": the gateway\'s machine).',
            ["lane", "node"],
            registry=reg,
        )
        # The node label each lane's series has now: a lane moved or gone loses its series.
        self._lane_nodes: dict[int, str] = {}
        self.lost_dispatches = Counter(
            "mlws_lost_dispatches_total",
            "Dispatches whose lane was lost with its node (each is retried once if its "
            "deadline allows), by the node lost.",
            ["node"],
            registry=reg,
        )

    def _create_swap_metrics(self, reg: CollectorRegistry) -> None:
        """Models loaded and evicted on demand under a lane budget."""
        self.model_loads = Counter(
            "mlws_model_loads_total",
            "Loads of a model onto a lane that did not hold it (lane budgets: a swap).",
            ["model"],
            registry=reg,
        )
        self.model_evictions = Counter(
            "mlws_model_evictions_total",
            "Models a lane released to make room for another (least recently used first).",
            ["model"],
            registry=reg,
        )
        self.model_load_seconds = Histogram(
            "mlws_model_load_seconds",
            "Time a lane took to load and warm a model on demand.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )

    def _create_admission_metrics(self, reg: CollectorRegistry) -> None:
        """The predictor's error and residual, and what admission did."""
        self.prediction_error = Gauge(
            "mlws_predictor_error_ratio",
            "Service-time predictor error, (predicted - observed) / observed.",
            ["model", "backend", "lane_group"],
            registry=reg,
        )
        self.residual = Gauge(
            "mlws_predictor_residual_ratio",
            "Online correction: exponentially weighted observed / predicted service time "
            "per batch-size bucket (1 = the base predictor is right; it multiplies predictions).",
            ["model", "backend", "precision", "batch_bucket", "lane_group"],
            registry=reg,
        )
        self.rejections = Counter(
            "mlws_rejections_total",
            "Requests refused at admission, by reason (predicted_late: the forecast finish "
            "was past the deadline; queue_full; too_large; unavailable).",
            ["model", "class", "reason"],
            registry=reg,
        )
        self.shed_saved = Counter(
            "mlws_shed_saved_seconds_total",
            "Predicted service time not spent on jobs shed before running (wasted compute "
            "avoided).",
            ["model", "class"],
            registry=reg,
        )
        self.completion_ratio = Histogram(
            "mlws_completion_ratio",
            "Admitted jobs that ended ok (late ones too): actual ÷ forecast time from arrival "
            "to completion.",
            ["class"],
            buckets=COMPLETION_RATIO_BUCKETS,
            registry=reg,
        )
        self.goodput = Counter(
            "mlws_goodput_total",
            "Jobs answered ok within their SLO (rate() is the in-SLO goodput).",
            ["model", "class"],
            registry=reg,
        )

    def register_model(self, model: str) -> None:
        """Pre-create every series of `model` at zero, so rate() works before any traffic."""
        self._register(model, with_latency=True)

    def _register(self, model: str, *, with_latency: bool) -> None:
        self._models.add(model)
        for job_class in JOB_CLASSES:
            for outcome in OUTCOMES:
                self.requests.labels(model, job_class, outcome)
            for reason in REJECTION_REASONS:
                self.rejections.labels(model, job_class, reason)
            self.goodput.labels(model, job_class)
            self.shed_saved.labels(model, job_class)
            if with_latency:
                self.request_duration.labels(model, job_class)
                self.queue_wait.labels(model, job_class)
                self.service.labels(model, job_class)
        if with_latency:
            self.microbatch_size.labels(model)
            self.model_loads.labels(model)
            self.model_evictions.labels(model)
            self.model_load_seconds.labels(model)

    @property
    def models(self) -> frozenset[str]:
        """Registered model names (``"unknown"`` included)."""
        return frozenset(self._models)

    def _model_label(self, model: str) -> str:
        return model if model in self._models else UNKNOWN_MODEL

    def observe_completion(self, job: Job) -> None:
        """Record one finished job: its latency histograms if ok, its outcome, its SLO.

        For an "ok" job: e2e (end - arrival), queue wait (start - arrival) and service
        (end - start) histograms by model and class. Every finished job counts once in
        `mlws_requests_total` under its outcome, and in `mlws_slo_violations_total` when it
        did not finish ok by its deadline. Raises ValueError for an unfinished job.
        """
        if job.outcome is None:
            raise ValueError(f"job {job.id} has not finished (outcome is None)")
        model = self._model_label(job.workload)
        if job.outcome == "ok" and job.end is not None:
            self.request_duration.labels(model, job.job_class).observe(
                max(0.0, job.end - job.arrival)
            )
            if job.start is not None:
                self.queue_wait.labels(model, job.job_class).observe(
                    max(0.0, job.start - job.arrival)
                )
                self.service.labels(model, job.job_class).observe(max(0.0, job.end - job.start))
        self.count_request(job.workload, job.job_class, job.outcome)
        if job.slo_met:
            self.goodput.labels(model, job.job_class).inc()
        else:
            self.slo_violations.labels(job.job_class).inc()
        if job.outcome == "ok" and job.predicted_end is not None and job.end is not None:
            # Late ones included: they are what a drifting forecast lets in.
            forecast = job.predicted_end - job.arrival
            if forecast > 0:
                ratio = (job.end - job.arrival) / forecast
                self.completion_ratio.labels(job.job_class).observe(ratio)
        if job.outcome == "shed" and job.saved_s > 0:
            self.shed_saved.labels(model, job.job_class).inc(job.saved_s)

    def count_rejection(self, model: str, job_class: str, reason: str) -> None:
        """One request refused at admission (its outcome is counted by observe_completion)."""
        if reason not in REJECTION_REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {REJECTION_REASONS}")
        self.rejections.labels(self._model_label(model), job_class, reason).inc()

    def _auth_failures_counter(self) -> Counter:
        counter = Counter(
            "mlws_auth_failures_total",
            "Requests refused by access control: missing_token and invalid_token (401), "
            "wrong_role (403).",
            ["reason"],
            registry=self.registry,
        )
        for reason in AUTH_FAILURE_REASONS:  # at zero from the start: rate() has data at once
            counter.labels(reason)
        return counter

    def count_auth_failure(self, reason: str) -> None:
        """One request refused by access control (it never reaches a route)."""
        if reason not in AUTH_FAILURE_REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {AUTH_FAILURE_REASONS}")
        self.auth_failures.labels(reason).inc()

    def count_request(self, model: str, job_class: str, outcome: str) -> None:
        """Count one request under its outcome (ok|rejected|shed|error|cancelled|invalid).

        Only for requests that never became a finished Job; `observe_completion` counts
        the others. Raises ValueError for an unknown class or outcome.
        """
        if job_class not in JOB_CLASSES:
            raise ValueError(f"unknown class {job_class!r}; expected one of {JOB_CLASSES}")
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        self.requests.labels(self._model_label(model), job_class, outcome).inc()

    def observe_batch(self, model: str, samples: int) -> None:
        """Record the size of one dispatched micro-batch."""
        self.microbatch_size.labels(self._model_label(model)).observe(samples)

    def set_queue_depth(self, job_class: str, depth: int) -> None:
        """Set the number of queued jobs of one class."""
        if job_class not in JOB_CLASSES:
            raise ValueError(f"unknown class {job_class!r}; expected one of {JOB_CLASSES}")
        self.queue_depth.labels(job_class).set(depth)

    def set_tokens(self, in_use: int, capacity: int) -> None:
        """Set the memory tokens held and the pool's capacity."""
        self.tokens_in_use.set(in_use)
        self.tokens_capacity.set(capacity)

    def set_lane_busy(self, lane: int, node: str, busy: bool) -> None:
        """Mark a lane on `node` busy (1) or idle (0)."""
        old = self._lane_nodes.get(lane)
        if old != node:
            if old is not None:
                self.lane_busy.remove(str(lane), old)
            self._lane_nodes[lane] = node
            self.lost_dispatches.labels(node)  # at zero from the start, per node with lanes
        self.lane_busy.labels(str(lane), node).set(1 if busy else 0)

    def forget_lane(self, lane: int) -> None:
        """Lane `lane` left: its series goes."""
        node = self._lane_nodes.pop(lane, None)
        if node is not None:
            self.lane_busy.remove(str(lane), node)

    def observe_swap(self, model: str, evicted: list[str], load_s: float) -> None:
        """A lane evicted the models `evicted` and loaded `model` in `load_s` seconds."""
        for name in evicted:
            self.model_evictions.labels(self._model_label(name)).inc()
        self.model_loads.labels(self._model_label(model)).inc()
        self.model_load_seconds.labels(self._model_label(model)).observe(load_s)

    def count_lost_dispatch(self, node: str) -> None:
        """A dispatch's lane was lost with `node`."""
        self.lost_dispatches.labels(node).inc()

    def set_prediction_error(self, model: str, backend: str, group: str, ratio: float) -> None:
        """Set the predictor's latest relative error for a model on a backend and lane group."""
        self.prediction_error.labels(self._model_label(model), backend, group).set(ratio)

    def set_residual(
        self, model: str, backend: str, precision: str, bucket: str, group: str, ratio: float
    ) -> None:
        """Set the online correction's observed ÷ predicted ratio of a batch-size bucket."""
        labels = (self._model_label(model), backend, precision, bucket, group)
        self.residual.labels(*labels).set(ratio)

    def render(self) -> tuple[bytes, str]:
        """The exposition text of this registry and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
