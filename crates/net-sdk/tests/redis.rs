//! `AdapterConfig::redis(..)` end to end: a bus built from the facade writes to a private
//! redis-server (or `REDIS_URL`) and polls the events back through `RedisStreamDedup`; bad
//! settings and a wrong password fail at `EventBus::new` with a clear error.
#![cfg(feature = "redis")]

use net_sdk::{
    AdapterConfig, ConfigError, ConsumeRequest, Event, EventBus, EventBusConfig,
    RedisAdapterConfig, RedisStreamDedup, WriteMode,
};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A private `redis-server` on a free port (killed on drop), or `REDIS_URL`.
struct Server {
    child: Option<Child>,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a server, or reports loudly why not (a failure under `CI=true`).
fn server(password: Option<&str>) -> Option<Server> {
    if password.is_none() {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Some(Server { child: None, url });
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    if let Some(password) = password {
        command.args(["--requirepass", password]);
    }
    let Ok(child) = command
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        let line = "!! net-sdk redis test SKIPPED: no redis-server binary (or set REDIS_URL)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{line}");
        eprintln!("{line}");
        return None;
    };
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(Server {
        child: Some(child),
        url,
    })
}

fn prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("net-sdk-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_on_redis_round_trips_events() {
    let Some(server) = server(None) else { return };
    for mode in [WriteMode::Script, WriteMode::Transaction] {
        let config = EventBusConfig::builder()
            .shards(4)
            .adapter(AdapterConfig::redis(
                RedisAdapterConfig::new(&server.url, prefix()).write_mode(mode),
            ))
            .build()
            .expect("config");
        let bus = EventBus::new(config).await.expect("bus");
        assert_eq!(bus.adapter_name(), "redis");
        for i in 0..1_000 {
            bus.ingest(Event::new(serde_json::json!({ "i": i })))
                .expect("ingest");
        }
        bus.flush().await.expect("flush");
        let mut dedup = RedisStreamDedup::new();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = ConsumeRequest::new(128);
            if let Some(cursor) = cursor.take() {
                request = request.from(cursor);
            }
            let page = bus.poll(request).await.expect("poll");
            for event in dedup.filter(page.events) {
                seen.push(event.json().expect("json")["i"].as_u64().expect("i"));
            }
            if !page.has_more {
                break;
            }
            cursor = Some(page.cursor);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..1_000).collect::<Vec<u64>>(), "{mode:?}");
        assert_eq!(dedup.dropped(), 0);
        bus.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn bad_settings_and_a_wrong_password_fail_at_construction() {
    let config = EventBusConfig::builder()
        .adapter(AdapterConfig::redis(
            RedisAdapterConfig::new("redis://127.0.0.1:1", "x").max_len(0),
        ))
        .build()
        .expect("config");
    match EventBus::new(config).await {
        Err(ConfigError::Invalid { reason, .. }) => assert!(reason.contains("max_len"), "{reason}"),
        other => panic!("expected an invalid setting, got {:?}", other.err()),
    }

    let Some(server) = server(Some("the-right-one")) else {
        return;
    };
    let wrong = server.url.replace("the-right-one", "not-the-password");
    let config = EventBusConfig::builder()
        .adapter(AdapterConfig::redis(RedisAdapterConfig::new(wrong, "x")))
        .build()
        .expect("config");
    let Err(err) = EventBus::new(config).await else {
        panic!("a wrong password must fail at EventBus::new");
    };
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, ConfigError::Adapter(ref e) if e.is_fatal()),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
}
