"""The trial record (`result.json`), typed, in one home: one dataclass per block (`blocks`), the record whole and its
reading, writing and upgrading (`record`), one `Status` vocabulary (`status`), and where a record holds each search
objective and table column (`columns`). Every writer builds a `TrialRecord` and writes it with `write_record`, which
checks every field against these types; every reader gets one from `read_record` / `parse_record`, which upgrade
older schema versions and name the file and field of anything that does not fit. Torch-free (the analysis reads it).
"""

from ..files import RecordError
from ..typed import lookup, parse, to_json
from .blocks import (
    DATA_WAIT_CONVENTION,
    MAC_CONVENTION,
    Agreement,
    ArchBlock,
    Complexity,
    Conversion,
    DataWaitBlock,
    Disagreement,
    Environment,
    Export,
    ExportCheck,
    Gate,
    Metrics,
    PerImage,
    Platform,
    Quant,
    QuantFiles,
    Search,
    Sizes,
    SpeedFigure,
    Timings,
    TrialSize,
    Weights,
)
from .columns import COLUMNS, OBJECTIVES, QUANT_OBJECTIVES, check_path
from .record import READABLE_VERSIONS, SCHEMA_VERSION, TrialRecord, parse_record, read_record, upgrade, write_record
from .status import WRITTEN, Status

__all__ = [
    "COLUMNS",
    "DATA_WAIT_CONVENTION",
    "MAC_CONVENTION",
    "OBJECTIVES",
    "QUANT_OBJECTIVES",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "WRITTEN",
    "Agreement",
    "ArchBlock",
    "Complexity",
    "Conversion",
    "DataWaitBlock",
    "Disagreement",
    "Environment",
    "Export",
    "ExportCheck",
    "Gate",
    "Metrics",
    "PerImage",
    "Platform",
    "Quant",
    "QuantFiles",
    "RecordError",
    "Search",
    "Sizes",
    "SpeedFigure",
    "Status",
    "Timings",
    "TrialRecord",
    "TrialSize",
    "Weights",
    "check_path",
    "lookup",
    "parse",
    "parse_record",
    "read_record",
    "to_json",
    "upgrade",
    "write_record",
]
