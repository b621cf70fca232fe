"""Request counts and latency histograms in Prometheus' text format, under
the names TF Serving's monitoring exports."""

import bisect
import threading

# Latency bucket bounds in microseconds, as TF Serving's request_latency.
BUCKETS = (10, 18, 32.4, 58.3, 105, 189, 340, 612, 1102, 1984, 3570, 6427, 11568, 20823, 37481, 67466,
           121440, 218591, 393464, 708235, 1274823, 2294681, 4130426, 7434767, 13382581, 24088646)


def label_value(text):
    """A label value escaped as Prometheus' text format requires (backslash,
    double quote and line feed), so no value writes its own line."""
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RequestMetrics:
    """Counts requests by model, API and status, and their latencies.

    Example:
    >>> metrics = RequestMetrics()
    >>> metrics.record("reviews", "predict", "OK", 0.012)
    >>> print(metrics.prometheus())
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}
        self._latency = {}

    def record(self, model, api, status, seconds):
        micros = seconds * 1e6
        with self._lock:
            key = (model, api, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            buckets, total = self._latency.setdefault((model, api), ([0] * (len(BUCKETS) + 1), [0.0, 0]))
            buckets[bisect.bisect_left(BUCKETS, micros)] += 1
            total[0] += micros
            total[1] += 1

    def prometheus(self):
        """The metrics as Prometheus' text exposition format."""
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (model, api, status), count in sorted(self._counts.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="{label_value(model)}",'
                             f'entrypoint="{label_value(api)}",status="{label_value(status)}"}} {count}')
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api), (buckets, (total, count)) in sorted(self._latency.items()):
                labels = f'model_name="{label_value(model)}",API="{label_value(api)}",entrypoint="{label_value(api)}"'
                cumulative = 0
                for bound, number in zip(BUCKETS + ("+Inf",), buckets):
                    cumulative += number
                    lines.append(f':tensorflow:serving:request_latency_bucket{{{labels},le="{bound}"}} {cumulative}')
                lines.append(f":tensorflow:serving:request_latency_sum{{{labels}}} {total:.1f}")
                lines.append(f":tensorflow:serving:request_latency_count{{{labels}}} {count}")
        return "\n".join(lines) + "\n"
