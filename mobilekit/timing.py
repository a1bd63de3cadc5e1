"""Latency measurement: warm-up, then at least ``runs`` calls and ``min_seconds``; summary statistics."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure: ``warmup`` untimed calls, then >= ``runs`` calls and >= ``min_seconds``."""

    warmup: int = 10
    runs: int = 50
    min_seconds: float = 2.0
    max_runs: int = 100_000

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.runs < 1 or self.min_seconds < 0:
            raise ValueError(f"need warmup >= 0, runs >= 1, min_seconds >= 0, got {self}")


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies in milliseconds; ``fps`` = 1000 / mean.

    ``cpu_median_ms`` is the median process CPU time per call (all threads, including thread-pool
    spinning). At one thread it is the number least disturbed by other jobs on a shared machine.
    """

    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    fps: float
    cpu_median_ms: float | None = None

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray, cpu_samples_ms: list[float] | None = None) -> "LatencyStats":
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError("latency samples must be a non-empty list of finite non-negative numbers")
        median, p90, p99 = np.percentile(s, [50, 90, 99])
        mean = float(s.mean())
        return cls(
            runs=int(s.size),
            median_ms=float(median),
            p90_ms=float(p90),
            p99_ms=float(p99),
            mean_ms=mean,
            std_ms=float(s.std(ddof=1)) if s.size > 1 else 0.0,
            min_ms=float(s.min()),
            max_ms=float(s.max()),
            fps=1000.0 / mean if mean > 0 else float("inf"),
            cpu_median_ms=float(np.median(cpu_samples_ms)) if cpu_samples_ms else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], cfg: TimingConfig, sync: Callable[[], None] | None = None) -> LatencyStats:
    """Time ``fn()`` with ``time.perf_counter``; ``sync`` (e.g. ``torch.cuda.synchronize``) runs
    after every call inside the timed region so asynchronous devices are measured to completion."""
    for _ in range(cfg.warmup):
        fn()
    if sync is not None:
        sync()
    samples: list[float] = []
    cpu_samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < cfg.max_runs and (len(samples) < cfg.runs or time.perf_counter() - start < cfg.min_seconds):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        if sync is not None:
            sync()
        samples.append((time.perf_counter() - t0) * 1000.0)
        cpu_samples.append((time.process_time() - c0) * 1000.0)
    return LatencyStats.from_samples(samples, cpu_samples)


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int = 7, calls: int = 5, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each of ``fns``, measured in alternation (``rounds`` rounds of
    ``calls`` calls each, the order reversed every other round), so that a busy minute on a shared
    machine slows every candidate alike instead of the one measured during it."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            for _ in range(calls):
                start = time.perf_counter()
                fns[name]()
                samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: float(np.median(values)) for name, values in samples.items()}
