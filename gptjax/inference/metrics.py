"""The server's Prometheus metrics (`GET /metrics`), under vLLM's names where one fits, so
dashboards written for vLLM read them; one registry per app, no global state.

    vllm:num_requests_running / vllm:num_requests_waiting   busy slots / queued generations
    vllm:prompt_tokens_total / vllm:generation_tokens_total   tokens read / written
    vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds,
    vllm:e2e_request_latency_seconds                          histograms, as clients see them
    vllm:request_success_total{finished_reason}               finished generations
    http_requests_total{handler, method, status}              every request, as vLLM's
                                                              instrumentator counts them
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# vLLM's buckets, in seconds.
TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)


class Metrics:
    """The metrics of one served model; `engine` (None for a classifier) feeds the gauges."""

    def __init__(self, model: str, engine=None):
        self.registry = r = CollectorRegistry()
        m = {"labelnames": ["model_name"], "registry": r}
        running = Gauge("vllm:num_requests_running", "Generations in a slot.", **m)
        waiting = Gauge("vllm:num_requests_waiting", "Generations waiting for a slot.", **m)
        if engine is not None:
            running.labels(model).set_function(lambda: len(engine.busy) - engine.free())
            waiting.labels(model).set_function(engine.waiting.qsize)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens read.", **m).labels(model)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", **m).labels(
            model
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to the first token.", buckets=TTFT, **m
        ).labels(model)
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds", "Time between tokens.", buckets=ITL, **m
        ).labels(model)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "Time a generation takes.", buckets=E2E, **m
        ).labels(model)
        self.success = Counter(
            "vllm:request_success",
            "Finished generations by finish reason.",
            labelnames=["model_name", "finished_reason"],
            registry=r,
        )
        self.model = model
        self.http = Counter(
            "http_requests", "HTTP requests.", ["handler", "method", "status"], registry=r
        )

    def finished(self, reason: str) -> None:
        self.success.labels(self.model, reason).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
