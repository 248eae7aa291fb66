"""netbus: the net event bus from Python.

    import netbus

    with netbus.EventBus(shards=16, adapter=netbus.Memory()) as bus:
        bus.ingest({"type": "click"})
        bus.flush()
        page = bus.poll(limit=100)

Everything here is implemented in Rust (the ``net-sdk`` crate); see docs/python.md.
"""

from netbus._netbus import (
    MAX_POLL_LIMIT,
    AdapterError,
    BackpressureError,
    BatchResult,
    ConfigError,
    ConsumerError,
    CursorStoreError,
    Event,
    EventBus,
    EventStream,
    IngestionError,
    InvalidCursorError,
    InvalidFilterError,
    JetStream,
    Log,
    Memory,
    Mesh,
    NetError,
    Noop,
    Page,
    Redis,
    SampledError,
    SerializationError,
    ShuttingDownError,
    TooLargeError,
    UnknownShardError,
    UnroutedError,
    __version__,
)

__all__ = [
    "MAX_POLL_LIMIT",
    "AdapterError",
    "BackpressureError",
    "BatchResult",
    "ConfigError",
    "ConsumerError",
    "CursorStoreError",
    "Event",
    "EventBus",
    "EventStream",
    "IngestionError",
    "InvalidCursorError",
    "InvalidFilterError",
    "JetStream",
    "Log",
    "Memory",
    "Mesh",
    "NetError",
    "Noop",
    "Page",
    "Redis",
    "SampledError",
    "SerializationError",
    "ShuttingDownError",
    "TooLargeError",
    "UnknownShardError",
    "UnroutedError",
    "__version__",
]
