//! Producers and consumers of one stream agree on its shard count: the first `net` command
//! records it in the backend, and a command with another `--shards` exits 2 with one line
//! instead of reading or writing a subset of the shards.

mod support;

use net_testkit::{NatsServer, RedisServer};
use support::{one_error_line, run, run_with_input, stderr, stdout, unique_stream};

fn check_mismatch_is_refused(adapter: &str, url: &str) {
    let stream = unique_stream("layout");
    let backend = |shards: &'static str| {
        vec![
            "--adapter",
            adapter,
            "--url",
            url,
            "--stream",
            stream.as_str(),
            "--shards",
            shards,
        ]
    };
    let mut produce = vec!["produce"];
    produce.extend(backend("4"));
    let lines: String = (0..40).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let output = run_with_input(&produce, lines.as_bytes());
    assert!(output.status.success(), "produce: {}", stderr(&output));

    for shards in ["2", "8"] {
        let mut consume = vec!["consume"];
        consume.extend(backend(shards));
        let line = one_error_line(&run(&consume), 2);
        assert!(
            line.contains("created with 4 shards") && line.contains(&format!("with {shards}")),
            "{adapter}, --shards {shards}: {line}"
        );
        let mut produce = vec!["produce"];
        produce.extend(backend(shards));
        let output = run_with_input(&produce, b"{\"late\":true}\n");
        let line = one_error_line(&output, 2);
        assert!(line.contains("created with 4 shards"), "{line}");
    }

    let mut consume = vec!["consume"];
    consume.extend(backend("4"));
    let output = run(&consume);
    assert!(output.status.success(), "consume: {}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 40, "{}", stderr(&output));
}

#[test]
fn a_consumer_with_another_shard_count_is_refused_on_redis() {
    let Some(redis) = RedisServer::any("a_consumer_with_another_shard_count_is_refused_on_redis")
    else {
        return;
    };
    check_mismatch_is_refused("redis", redis.url());
}

#[test]
fn a_consumer_with_another_shard_count_is_refused_on_jetstream() {
    let Some(nats) = NatsServer::any("a_consumer_with_another_shard_count_is_refused_on_jetstream")
    else {
        return;
    };
    check_mismatch_is_refused("jetstream", nats.url());
}
