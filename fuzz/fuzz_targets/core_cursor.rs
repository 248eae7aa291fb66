//! Polls a bus with arbitrary text as the cursor: a hostile cursor is a typed error, never a
//! panic, and a cursor the bus returned is accepted when it comes back.
//!
//! `net-core` decodes cursors in a private module, so this goes through the public
//! `EventBus::poll`, on a bus over a `MemoryAdapter` that holds a few events per shard.

#![no_main]

use libfuzzer_sys::fuzz_target;
use net_core::net_adapter::MemoryAdapter;
use net_core::{ConsumeRequest, EventBus, EventBusConfig, RawEvent};
use std::sync::OnceLock;

/// One runtime and one bus for the whole run: building a bus per input would drown the
/// decoder in setup.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    bus: EventBus,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let bus = runtime.block_on(async {
            let config = EventBusConfig::builder()
                .shards(4)
                .adapter_instance(MemoryAdapter::new())
                .build()
                .expect("config");
            let bus = EventBus::new(config).await.expect("bus");
            for i in 0..64 {
                bus.ingest_raw(RawEvent::from_bytes(format!("{{\"i\":{i}}}")))
                    .expect("ingest");
            }
            bus.flush().await.expect("flush");
            bus
        });
        Fixture { runtime, bus }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(cursor) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = fixture();
    fixture.runtime.block_on(async {
        if let Ok(page) = fixture.bus.poll(ConsumeRequest::new(8).from(cursor)).await {
            fixture
                .bus
                .poll(ConsumeRequest::new(8).from(page.cursor))
                .await
                .expect("a cursor the bus returned must be accepted again");
        }
    });
});
