"""Per-stream Prometheus series, read from the workers' counters at scrape time (labels: stream id, name)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.streams.manager import StreamManager

STATES = ("connecting", "running", "reconnecting", "stopped")


class StreamCollector(Collector):
    """``facerec_stream_*``: frames in / processed / dropped, reconnects, events (counters); up, lag (gauges)."""

    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        labels = ["stream", "name"]
        frames = CounterMetricFamily("facerec_stream_frames", "Stream frames by fate.", labels=[*labels, "kind"])
        reconnects = CounterMetricFamily("facerec_stream_reconnects", "Stream reconnections.", labels=labels)
        events = CounterMetricFamily("facerec_stream_events", "Track decisions recorded.", labels=labels)
        up = GaugeMetricFamily("facerec_stream_up", "1 while the stream is connected and read.", labels=labels)
        lag = GaugeMetricFamily(
            "facerec_stream_lag_seconds", "Capture to end of processing of the last frame, s.", labels=labels
        )
        fps = GaugeMetricFamily("facerec_stream_fps", "Frames per second (last 5 s).", labels=[*labels, "kind"])
        for w in self.manager.workers():
            key = [w.cfg.id, w.cfg.name]
            h = w.health()
            for kind in ("in", "processed", "dropped"):
                frames.add_metric([*key, kind], h[f"frames_{kind}"])
            fps.add_metric([*key, "in"], h["fps_in"])
            fps.add_metric([*key, "processed"], h["fps_processed"])
            reconnects.add_metric(key, h["reconnects"])
            events.add_metric(key, h["events"])
            up.add_metric(key, 1.0 if h["state"] == "running" else 0.0)
            if h["lag_ms"] is not None:
                lag.add_metric(key, h["lag_ms"] / 1000.0)
        yield from (frames, reconnects, events, up, lag, fps)
