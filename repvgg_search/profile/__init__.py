"""Profiling: complexity (fvcore MACs and params of both forms) and speed (throughput, latency), and the
`python -m repvgg_search.profile` table of train form vs deploy form."""

from ..schema import MAC_CONVENTION
from .complexity import arch_sizes, complexity, meta_complexity
from .speed import DTYPES, device_name, equivalence_error, randomize_bn_, resolve_device, throughput

__all__ = [
    "DTYPES",
    "MAC_CONVENTION",
    "arch_sizes",
    "complexity",
    "device_name",
    "equivalence_error",
    "meta_complexity",
    "randomize_bn_",
    "resolve_device",
    "throughput",
]
