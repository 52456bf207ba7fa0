"""Profiling: complexity (fvcore MACs and params of both forms), speed under a protocol (throughput, latency,
spread), and the `python -m repvgg_search.profile` table of train form vs deploy form."""

from ..devices import device_name, resolve_device
from ..models import equivalence_error, randomize_bn_  # their home is beside the fusion; kept here for callers
from ..schema import MAC_CONVENTION
from .complexity import arch_sizes, complexity, meta_complexity
from .protocols import DTYPES, PROTOCOLS, SpeedError, SpeedProtocol, list_protocols, resolve_protocol
from .speed import measure, throughput

__all__ = [
    "DTYPES",
    "MAC_CONVENTION",
    "PROTOCOLS",
    "SpeedError",
    "SpeedProtocol",
    "arch_sizes",
    "complexity",
    "device_name",
    "equivalence_error",
    "list_protocols",
    "measure",
    "meta_complexity",
    "randomize_bn_",
    "resolve_device",
    "resolve_protocol",
    "throughput",
]
