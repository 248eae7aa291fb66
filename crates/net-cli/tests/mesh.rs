//! `net keygen` and `net node` through the real binaries: two nodes on loopback, events
//! produced into one and consumed from the other, a node under a flood of stalled
//! connections, and the error paths of both commands.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{net, one_error_line, run, stderr, stdout, write_lines};

/// A `net node` process, stopped with SIGINT (or killed) when dropped.
struct Node {
    child: Child,
    addr: String,
    id: String,
}

impl Node {
    /// Starts `net node` with `args` and waits for its "listening on" line.
    fn start(args: &[&str]) -> Node {
        let mut child = net()
            .arg("node")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start net node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the node's first line");
        // `node <id> listening on <addr>`
        let words: Vec<&str> = line.split_whitespace().collect();
        if !(words.len() == 5 && words[0] == "node" && words[2] == "listening") {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait for the node");
            panic!(
                "unexpected first line {line:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Node {
            addr: words[4].to_owned(),
            id: words[1].to_owned(),
            child,
        }
    }

    /// The node's resident memory in bytes, from /proc.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the node's /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kb * 1024
    }

    /// Interrupts the node as Ctrl-C would and returns its exit status and standard error.
    fn interrupt(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let mut err = String::new();
        let mut stderr = self.child.stderr.take().expect("stderr");
        std::io::Read::read_to_string(&mut stderr, &mut err).expect("read stderr");
        let status = self.child.wait().expect("wait for the node");
        (status.code(), err)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(dir: &Path, name: &str, extra: &[&str]) -> String {
    let path = dir.join(name);
    let mut args = vec!["keygen", "-o", path.to_str().unwrap()];
    args.extend(extra);
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let id = stdout(&output).trim().to_owned();
    assert_eq!(id.len(), 43, "a node id is 43 base64url characters: {id:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    id
}

#[test]
fn events_cross_two_nodes_exactly_once_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("mesh.psk");
    let psk = psk.to_str().unwrap();
    let a_id = keygen(dir.path(), "a.key", &["--psk", psk]);
    let b_id = keygen(dir.path(), "b.key", &[]);
    let c_id = keygen(dir.path(), "consumer.key", &[]);
    assert!(a_id != b_id && b_id != c_id);
    let key = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // B stores everything in memory and accepts only A and the consumer; A stores nothing
    // itself and forwards to B.
    let b = Node::start(&[
        "--identity",
        &key("b.key"),
        "--psk-file",
        psk,
        "--allow",
        &a_id,
        "--allow",
        &c_id,
    ]);
    assert_eq!(b.id, b_id);
    let a = Node::start(&[
        "--identity",
        &key("a.key"),
        "--psk-file",
        psk,
        "--peer",
        &b.addr,
        "--storage",
        "forward",
    ]);
    assert_eq!(a.id, a_id);

    let lines: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                r#"{{"user":"u{}","seq":{},"pad":"{}"}}"#,
                i % 13,
                i / 13,
                "x".repeat(i % 50)
            )
        })
        .collect();
    let input = dir.path().join("input.jsonl");
    write_lines(&input, &lines);
    let output = run(&[
        "produce",
        "--adapter",
        "net",
        "--peer",
        &a.addr,
        "--psk-file",
        psk,
        "--file",
        input.to_str().unwrap(),
        "--key",
        "user",
    ]);
    assert!(output.status.success(), "produce: {}", stderr(&output));
    assert!(
        stderr(&output).contains("produced 10000 events"),
        "{}",
        stderr(&output)
    );

    let cursor = dir.path().join("consumer.cursor");
    let consumer_key = key("consumer.key");
    let consume = |extra: &[&str]| {
        let mut args = vec![
            "consume",
            "--adapter",
            "net",
            "--peer",
            &b.addr,
            "--psk-file",
            psk,
            "--identity",
            &consumer_key,
            "--cursor-file",
            cursor.to_str().unwrap(),
        ];
        args.extend(extra);
        let output = run(&args);
        assert!(output.status.success(), "consume: {}", stderr(&output));
        stdout(&output)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut received = consume(&["--limit", "4000"]);
    assert_eq!(received.len(), 4000);
    received.extend(consume(&[]));
    assert!(consume(&[]).is_empty(), "nothing is left after the cursor");

    // Every line exactly once...
    assert_eq!(received.len(), lines.len());
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "a line arrived twice");
    assert_eq!(unique, lines.iter().collect());
    // ... and each user's lines in the order they were produced.
    let mut last: HashMap<String, i64> = HashMap::new();
    for line in &received {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = v["user"].as_str().unwrap().to_owned();
        let seq = v["seq"].as_i64().unwrap();
        let before = last.insert(user.clone(), seq).unwrap_or(-1);
        assert!(seq > before, "{user}: {seq} after {before}");
    }

    // A consumer whose identity B does not allow is refused.
    let stranger = run(&[
        "consume",
        "--adapter",
        "net",
        "--peer",
        &b.addr,
        "--psk-file",
        psk,
        "--connect-timeout-ms",
        "1500",
    ]);
    let line = one_error_line(&stranger, 1);
    assert!(line.contains("no connected peer stores shard"), "{line}");

    // The bench drives the mesh too (through the relay, into B).
    let output = run(&[
        "bench",
        "--adapter",
        "net",
        "--peer",
        &a.addr,
        "--psk-file",
        psk,
        "--events",
        "20000",
        "--json",
    ]);
    assert!(output.status.success(), "bench: {}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(report["events"], 20000);
    assert_eq!(report["dropped"], 0);

    // Ctrl-C stops both nodes cleanly.
    for node in [a, b] {
        let (code, err) = node.interrupt();
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("node stopped"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn keygen_and_node_errors_print_one_line() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "n.key", &[]);
    let key = dir.path().join("n.key");
    let key = key.to_str().unwrap();
    let loose = dir.path().join("loose.key");
    std::fs::copy(key, &loose).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let bad_psk = dir.path().join("bad.psk");
    std::fs::write(&bad_psk, "not hex").unwrap();
    let open_psk = dir.path().join("open.psk");
    std::fs::write(&open_psk, "ab".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad_psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&open_psk, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["keygen", "-o", key], "already exists"),
        (vec!["node"], "--identity"),
        (vec!["node", "--identity", "/no/such.key"], "does not exist"),
        (vec!["node", "--identity", loose.to_str().unwrap()], "0600"),
        (
            vec![
                "node",
                "--identity",
                key,
                "--psk-file",
                bad_psk.to_str().unwrap(),
            ],
            "64 hex digits",
        ),
        (
            vec!["node", "--identity", key, "--psk-file", "/no/such.psk"],
            "does not exist",
        ),
        (
            vec![
                "node",
                "--identity",
                key,
                "--psk-file",
                open_psk.to_str().unwrap(),
            ],
            "0600",
        ),
        (
            vec!["node", "--identity", key, "--listen", "nowhere"],
            "nowhere",
        ),
        (
            vec!["node", "--identity", key, "--allow", "not-an-id"],
            "--allow",
        ),
        (
            vec!["node", "--identity", key, "--stores", "9-2"],
            "--stores",
        ),
        (
            vec!["node", "--identity", key, "--storage", "forward"],
            "--peer",
        ),
        (vec!["produce", "--adapter", "net"], "--peer"),
    ];
    for (args, needle) in cases {
        let line = one_error_line(&run(&args), 2);
        assert!(line.contains(needle), "`net {}`: {line}", args.join(" "));
    }
    // A port already taken is an operational failure, not a usage error.
    let line = one_error_line(&run(&["node", "--identity", key, "--listen", &busy]), 1);
    assert!(line.contains("cannot start the node"), "{line}");
    assert!(line.contains(&format!("cannot listen on {busy}")), "{line}");
    assert!(!line.contains("Some("), "debug formatting in: {line}");
}

/// One connection of a flood, left stalled at some point of the handshake.
fn stalled_connection(addr: &str, kind: usize) -> std::io::Result<std::net::TcpStream> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(addr)?;
    match kind % 3 {
        // Idle: connects and says nothing.
        0 => {}
        // Half open: a genuine first handshake message, then silence.
        1 => {
            let mut config =
                net_mesh::SessionConfig::new(net_mesh::EntityKeypair::generate().unwrap());
            config.psk = Some([0u8; 32]);
            let mut session =
                net_mesh::Session::new(config, net_mesh::Role::Initiator, Instant::now()).unwrap();
            stream.write_all(&session.take_output())?;
        }
        // A record header and part of its body, then silence.
        _ => stream.write_all(&[0x00, 0x30, 1, 2, 3])?,
    }
    Ok(stream)
}

/// The `handshake_ms=` values of the "mesh session established" lines in `log`.
fn handshake_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("mesh session established"))
        .filter_map(|l| {
            let at = l.find("handshake_ms=")? + "handshake_ms=".len();
            l[at..].split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[test]
fn an_honest_producer_gets_through_a_flood_of_stalled_connections() {
    const FLOOD: usize = 1_000;
    // The flood's sockets, and the node's (it inherits the limit).
    let limit = rlimit::increase_nofile_limit(FLOOD as u64 + 1_024).expect("raise RLIMIT_NOFILE");
    assert!(
        limit >= FLOOD as u64 + 256,
        "open-file limit {limit} is too low"
    );
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("mesh.psk");
    let psk = psk.to_str().unwrap();
    keygen(dir.path(), "node.key", &["--psk", psk]);
    let key = dir.path().join("node.key");
    let node = Node::start(&["--identity", key.to_str().unwrap(), "--psk-file", psk]);

    // 1000 stalled connections from loopback, the address the honest producer uses too,
    // held open while a background thread keeps replacing some of them with fresh ones (20
    // a second: a flood that outpaces honest handshakes from the honest peer's own address
    // can push it out, as docs/mesh-protocol.md §3.6 says).
    let mut held: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|i| stalled_connection(&node.addr, i).expect("open a flood connection"))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let addr = node.addr.clone();
        let mut held = std::mem::take(&mut held);
        std::thread::spawn(move || {
            let mut i = 0usize;
            let mut opened = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(fresh) = stalled_connection(&addr, i) {
                    held[i % FLOOD] = fresh;
                    opened += 1;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (held, opened)
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    // A timed connect of an honest dialer from this process...
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let psk_bytes: [u8; 32] = {
        let text = std::fs::read_to_string(psk).unwrap();
        let text = text.trim();
        std::array::from_fn(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
    };
    let connect_time = runtime.block_on(async {
        let started = Instant::now();
        let client = net_mesh::NetAdapter::new(
            net_mesh::NetAdapterConfig::default()
                .peer(&node.addr)
                .psk(psk_bytes),
        )
        .unwrap();
        client.start().await.unwrap();
        assert!(
            client
                .wait_for_coverage(0, 1, Duration::from_secs(10))
                .await,
            "the honest dialer never completed its handshake"
        );
        started.elapsed()
    });
    assert!(
        connect_time < Duration::from_secs(1),
        "an honest connect took {connect_time:?} under the flood"
    );

    // ... and `net produce` of 10,000 events through the node.
    let lines: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"user":"u{}","seq":{i}}}"#, i % 17))
        .collect();
    let input = dir.path().join("input.jsonl");
    write_lines(&input, &lines);
    let started = Instant::now();
    let output = net()
        .env("RUST_LOG", "net_mesh=info")
        .args([
            "produce",
            "--adapter",
            "net",
            "--peer",
            &node.addr,
            "--psk-file",
            psk,
            "--file",
            input.to_str().unwrap(),
            "--key",
            "user",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run net produce");
    let produce_time = started.elapsed();
    let log = stderr(&output);
    if !output.status.success()
        || !log.contains("produced 10000 events")
        || log.contains("mesh handshake failed")
    {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (_, node_log) = node.interrupt();
        panic!(
            "the producer failed or had to retry its handshake under the flood:\n{log}\n\
             node:\n{node_log}"
        );
    }
    let times = handshake_times(&log);
    assert_eq!(times.len(), 1, "one session expected: {log}");
    assert!(
        times[0] < 1_000.0,
        "the producer's handshake took {} ms",
        times[0]
    );

    let rss = node.rss();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (held, opened) = churn.join().unwrap();
    eprintln!(
        "under a flood of {FLOOD} stalled connections (+{opened} fresh ones): timed connect \
         {connect_time:?}, producer handshake {:.1} ms, produce of 10000 events {produce_time:?}, \
         node RSS {:.1} MiB",
        times[0],
        rss as f64 / (1 << 20) as f64
    );
    assert!(rss < 64 << 20, "node RSS {rss} bytes");
    drop(held);
    let (code, err) = node.interrupt();
    assert_eq!(code, Some(0), "{err}");
    // The flood's failures are summarised, not logged one by one.
    let failure_lines = err.lines().filter(|l| l.contains("mesh handshake")).count();
    assert!(
        failure_lines <= 2 + 2 * (started.elapsed().as_secs() as usize / 5 + 1),
        "{failure_lines} handshake failure lines for one flood:\n{err}"
    );
    assert!(err.contains("not durable"), "{err}");
}

#[test]
fn failed_handshakes_are_summarised_not_logged_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "node.key", &[]);
    let key = dir.path().join("node.key");
    let node = Node::start(&["--identity", key.to_str().unwrap()]);
    const BAD: u64 = 300;
    for _ in 0..BAD {
        use std::io::{Read as _, Write as _};
        // A record of length zero: refused at once.
        let mut stream = std::net::TcpStream::connect(&node.addr).unwrap();
        stream.write_all(&[0, 0]).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    let (code, err) = node.interrupt();
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("mesh handshake"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 3,
        "{} lines for {BAD} failed handshakes:\n{err}",
        lines.len()
    );
    // Every failure is accounted for: one logged alone, the rest in summaries.
    let counted: u64 = lines
        .iter()
        .map(|l| match l.find("failed=") {
            Some(at) => l[at + "failed=".len()..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            None => 1,
        })
        .sum();
    assert_eq!(counted, BAD, "{err}");
    assert!(err.contains("protocol="), "{err}");
}

#[test]
fn keygen_never_writes_the_psk_over_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("same.key");
    let key = key.to_str().unwrap();
    // The same file, spelled two ways.
    let other_spelling = format!("{}/./same.key", dir.path().display());
    for psk in [key, other_spelling.as_str()] {
        for force in [false, true] {
            let mut args = vec!["keygen", "-o", key, "--psk", psk];
            if force {
                args.push("--force");
            }
            let line = one_error_line(&run(&args), 2);
            assert!(line.contains("identity file itself"), "{line}");
            assert!(
                !Path::new(key).exists(),
                "nothing may be written when the paths collide"
            );
        }
    }
    // Existing files are kept unless --force.
    let id = keygen(dir.path(), "a.key", &[]);
    let a = dir.path().join("a.key");
    let psk = dir.path().join("a.psk");
    std::fs::write(&psk, "keep").unwrap();
    let line = one_error_line(
        &run(&[
            "keygen",
            "-o",
            "/tmp/unused-net-key",
            "--psk",
            psk.to_str().unwrap(),
        ]),
        2,
    );
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read_to_string(&psk).unwrap(), "keep");
    assert!(!Path::new("/tmp/unused-net-key").exists());
    let output = run(&["keygen", "-o", a.to_str().unwrap(), "--force"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(stdout(&output).trim(), id, "--force makes a new identity");
}

#[test]
fn numeric_flags_are_bounded_before_use() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "n.key", &[]);
    let key = dir.path().join("n.key");
    let key = key.to_str().unwrap();
    // A port already taken: a node whose flags are all accepted fails (status 1) only when
    // it binds, after the storage and settings are built.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let values = [
        "0",
        "1",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "1e9",
        "abc",
        "",
    ];
    let flags = ["--retain", "--storage-retry-window", "--connect-timeout-ms"];
    for flag in flags {
        for value in values {
            let args = ["node", "--identity", key, "--listen", &busy, flag, value];
            let output = run(&args);
            let code = output.status.code();
            assert!(
                matches!(code, Some(1 | 2)),
                "`net {}` ended with {code:?}: {}",
                args.join(" "),
                stderr(&output)
            );
            let line = one_error_line(&output, code.unwrap());
            if code == Some(1) {
                assert!(line.contains("cannot start the node"), "{line}");
            }
        }
    }
    // Out-of-range values are usage errors that name the flag.
    for (flag, value) in [
        ("--retain", "0"),
        ("--retain", "18446744073709551615"),
        ("--storage-retry-window", "3601"),
        ("--connect-timeout-ms", "0"),
        ("--connect-timeout-ms", "18446744073709551615"),
    ] {
        let line = one_error_line(
            &run(&["node", "--identity", key, "--listen", &busy, flag, value]),
            2,
        );
        assert!(line.contains(flag), "{flag} {value}: {line}");
    }
    // The shared mesh flag is bounded for produce too.
    let line = one_error_line(
        &run(&[
            "produce",
            "--adapter",
            "net",
            "--peer",
            "127.0.0.1:1",
            "--connect-timeout-ms",
            "18446744073709551615",
        ]),
        2,
    );
    assert!(line.contains("--connect-timeout-ms"), "{line}");
}

#[test]
fn a_node_rides_out_a_redis_restart_and_stores_every_event_once() {
    use std::io::Write as _;
    let Some(mut redis) = net_testkit::RedisServer::private(
        "a_node_rides_out_a_redis_restart_and_stores_every_event_once",
        net_testkit::RedisOptions {
            aof: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "node.key", &[]);
    let key = dir.path().join("node.key");
    let stream = support::unique_stream("node-redis-restart");
    let node = Node::start(&[
        "--identity",
        key.to_str().unwrap(),
        "--storage",
        "redis",
        "--storage-url",
        redis.url(),
        "--storage-stream",
        &stream,
    ]);

    // Lines trickle in over about four seconds, so batches are in flight while Redis is down.
    const EVENTS: usize = 10_000;
    let mut produce = net()
        .args(["produce", "--adapter", "net", "--peer", &node.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start net produce");
    let mut input = produce.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in 0..(EVENTS / 100) {
            let mut text = String::new();
            for i in chunk * 100..(chunk + 1) * 100 {
                text.push_str(&format!("{{\"i\":{i}}}\n"));
            }
            input.write_all(text.as_bytes()).expect("feed net produce");
            std::thread::sleep(Duration::from_millis(40));
        }
    });
    std::thread::sleep(Duration::from_millis(1_000));
    redis.kill();
    std::thread::sleep(Duration::from_millis(2_000));
    redis.restart();
    writer.join().unwrap();
    let output = produce.wait_with_output().expect("wait for net produce");
    assert!(output.status.success(), "produce: {}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("produced {EVENTS} events")),
        "{}",
        stderr(&output)
    );

    let (code, err) = node.interrupt();
    assert_eq!(code, Some(0), "{err}");
    let retries: u64 = err
        .lines()
        .find_map(|l| {
            let at = l.find(" duplicate deliveries dropped, ")?;
            l[at..]
                .split(", ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no storage retry count in: {err}"));
    assert!(retries > 0, "the node never had to retry: {err}");
    assert!(err.contains(" 0 batches refused"), "{err}");

    // Every event is in Redis exactly once.
    let keys = redis.cli(&["--scan", "--pattern", &format!("{stream}:shard:*")]);
    let mut stored = 0u64;
    let mut seen = HashSet::new();
    for key in keys.lines().filter(|k| !k.trim().is_empty()) {
        stored += redis
            .cli(&["XLEN", key.trim()])
            .trim()
            .parse::<u64>()
            .unwrap();
        for line in redis.cli(&["XRANGE", key.trim(), "-", "+"]).lines() {
            let line = line.replace('\\', "");
            if let Some(at) = line.find("\"i\":") {
                let i: String = line[at + 4..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                assert!(seen.insert(i.clone()), "event {i} stored twice");
            }
        }
    }
    assert_eq!(stored, EVENTS as u64, "events stored in Redis");
    assert_eq!(seen.len(), EVENTS);
}

/// `GET path` on `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// The value of the sample `name` (with its labels) in Prometheus text.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn a_node_serves_metrics_and_health() {
    let Some(mut redis) = net_testkit::RedisServer::private(
        "a_node_serves_metrics_and_health",
        net_testkit::RedisOptions::default(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "node.key", &[]);
    let key = dir.path().join("node.key");
    let metrics = format!("127.0.0.1:{}", net_testkit::free_port());
    let node = Node::start(&[
        "--identity",
        key.to_str().unwrap(),
        "--storage",
        "redis",
        "--storage-url",
        redis.url(),
        "--storage-stream",
        &support::unique_stream("node-metrics"),
        "--metrics",
        &metrics,
    ]);
    assert!(
        net_testkit::wait_for_port(
            metrics.rsplit(':').next().unwrap().parse().unwrap(),
            Duration::from_secs(10)
        ),
        "the metrics endpoint never listened"
    );
    let (status, body) = http_get(&metrics, "/health");
    assert_eq!((status, body.trim()), (200, "ok"));

    let lines: Vec<String> = (0..500).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    let input = dir.path().join("input.jsonl");
    write_lines(&input, &lines);
    let output = run(&[
        "produce",
        "--adapter",
        "net",
        "--peer",
        &node.addr,
        "--file",
        input.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    // A failed handshake, counted by reason.
    {
        use std::io::{Read as _, Write as _};
        let mut bad = std::net::TcpStream::connect(&node.addr).unwrap();
        bad.write_all(&[0, 0]).unwrap();
        let _ = bad.read_to_end(&mut Vec::new());
    }

    let (status, text) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        sample(&text, "net_node_batches_stored_total") >= 1,
        "{text}"
    );
    assert!(sample(&text, "net_node_bytes_in_total") > 500 * 7, "{text}");
    assert!(sample(&text, "net_node_bytes_out_total") > 0, "{text}");
    assert_eq!(
        sample(&text, "net_node_sessions_established_total"),
        1,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"net_node_handshake_failures_total{reason="protocol"}"#
        ),
        1,
        "{text}"
    );
    assert_eq!(sample(&text, "net_node_storage_errors_total"), 0, "{text}");
    assert_eq!(
        sample(&text, r#"net_node_storage_healthy{storage="redis"}"#),
        1,
        "{text}"
    );
    assert_eq!(http_get(&metrics, "/nothing").0, 404);

    // With the storage down, the node reports itself unhealthy.
    redis.kill();
    let started = Instant::now();
    loop {
        let (status, _) = http_get(&metrics, "/health");
        if status == 503 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/health still {status} with Redis down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, err) = node.interrupt();
    assert!(code.is_some(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
