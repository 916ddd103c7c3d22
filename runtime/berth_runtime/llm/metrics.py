"""Token-level metrics of the text generation engine.

Berth's own names (label ``model``):

- ``berth_llm_time_to_first_token_seconds``: arrival to the first generated token.
- ``berth_llm_time_per_output_token_seconds``: each later token's gap (one observation
  per request: its mean gap, as vLLM reports it).
- ``berth_llm_e2e_request_latency_seconds``: arrival to the last token.
- ``berth_llm_prompt_tokens_total``, ``berth_llm_generation_tokens_total``.
- ``berth_llm_requests_total{finish_reason}``: stop, length, abort (disconnect or deadline), error.
- ``berth_llm_requests_waiting``, ``berth_llm_requests_running``: the scheduler's queues.
- ``berth_llm_kv_cache_usage_ratio``: KV-cache pages held by running requests, 0..1.
- ``berth_llm_forward_passes_total``: model forward passes (prefill chunks and decode
  steps share a pass; with batching, fewer passes than tokens).

And the names the Gateway API Inference Extension's endpoint picker reads by default
(label ``model_name``, as vLLM exports them): ``vllm:num_requests_waiting``,
``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc`` (a 0..1 fraction, despite the
name) and ``vllm:cache_config_info{block_size,num_gpu_blocks}``.

Updates happen on the event loop; gauges are read from the engine at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from berth_runtime.metrics import Hist

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FINISH_REASONS = ("stop", "length", "abort", "error")


class LlmMetrics(Collector):
    def __init__(self, model: str, engine: Callable[[], Any]) -> None:
        self.model = model
        self._engine = engine  # () -> Engine | None, read at scrape time
        self.ttft = Hist(TTFT_BUCKETS)
        self.tpot = Hist(TPOT_BUCKETS)
        self.e2e = Hist(E2E_BUCKETS)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = dict.fromkeys(FINISH_REASONS, 0)

    def request_done(
        self, reason: str, prompt: int, generated: int, ttft: float | None, total: float
    ) -> None:
        self.finished[reason] = self.finished.get(reason, 0) + 1
        self.prompt_tokens += prompt
        self.generation_tokens += generated
        self.e2e.observe(total)
        if ttft is not None:
            self.ttft.observe(ttft)
            if generated > 1:
                self.tpot.observe((total - ttft) / (generated - 1))

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        name = [self.model]
        for metric, help_text, hist in (
            (
                "berth_llm_time_to_first_token_seconds",
                "Arrival to first token, seconds.",
                self.ttft,
            ),
            (
                "berth_llm_time_per_output_token_seconds",
                "Mean gap between output tokens after the first, seconds (one per request).",
                self.tpot,
            ),
            ("berth_llm_e2e_request_latency_seconds", "Arrival to last token, seconds.", self.e2e),
        ):
            family = HistogramMetricFamily(metric, help_text, labels=["model"])
            family.add_metric(name, hist.buckets(), hist.total)
            yield family
        for metric, help_text, value in (
            ("berth_llm_prompt_tokens", "Prompt tokens of finished requests.", self.prompt_tokens),
            (
                "berth_llm_generation_tokens",
                "Generated tokens of finished requests.",
                self.generation_tokens,
            ),
        ):
            counter = CounterMetricFamily(metric, help_text, labels=["model"])
            counter.add_metric(name, value)
            yield counter
        reasons = CounterMetricFamily(
            "berth_llm_requests", "Finished generation requests.", labels=["model", "finish_reason"]
        )
        for reason, count in self.finished.items():
            reasons.add_metric([self.model, reason], count)
        yield reasons
        engine = self._engine()
        if engine is None:
            return
        waiting, running, usage = engine.counts()
        passes = CounterMetricFamily(
            "berth_llm_forward_passes", "Model forward passes of the engine.", labels=["model"]
        )
        passes.add_metric(name, engine.forward_passes)
        yield passes
        for metric, help_text, value in (
            ("berth_llm_requests_waiting", "Requests waiting to join the batch.", waiting),
            ("berth_llm_requests_running", "Requests in the running batch.", running),
            ("berth_llm_kv_cache_usage_ratio", "KV-cache pages in use, 0 to 1.", usage),
        ):
            gauge = GaugeMetricFamily(metric, help_text, labels=["model"])
            gauge.add_metric(name, value)
            yield gauge
        for metric, help_text, value in (
            ("vllm:num_requests_waiting", "Requests waiting (Inference Extension name).", waiting),
            ("vllm:num_requests_running", "Requests running (Inference Extension name).", running),
            (
                "vllm:kv_cache_usage_perc",
                "KV-cache usage, 0 to 1 (Inference Extension name).",
                usage,
            ),
        ):
            gauge = GaugeMetricFamily(metric, help_text, labels=["model_name"])
            gauge.add_metric(name, value)
            yield gauge
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "KV-cache configuration (Inference Extension name).",
            labels=["model_name", "block_size", "num_gpu_blocks"],
        )
        info.add_metric([self.model, str(engine.cfg.page_size), str(engine.kv_blocks)], 1.0)
        yield info
