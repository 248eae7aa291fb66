//! `net keygen` and `net node` through the real binaries: two nodes on loopback, events
//! produced into one and consumed from the other, and the error paths of both commands.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
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
}
