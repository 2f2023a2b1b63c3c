//! `node-worker capture --read FILE --sink kafka` against the real test broker: the pairs the file
//! sink writes are the pairs that land in the topic (the same JSON, line for message), and a missing
//! topic fails the run with a one-line reason naming it. A config with a librdkafka property the worker
//! owns is refused at load, before any broker is asked.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn capture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/corpus/captures/zeek__http-pipelining.pcap")
}

fn config(dir: &Path, brokers: &str, topic: &str, create: bool) -> std::path::PathBuf {
    let path = dir.join(format!("{topic}.yaml"));
    std::fs::write(
        &path,
        format!(
            "filters: {{contentTypes: []}}\nkafka: {{brokers: [\"{brokers}\"], topic: {topic}, createTopic: {create}, \
             topicPartitions: 1, properties: {{\"reconnect.backoff.max.ms\": \"1000\"}}}}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_cli_produces_its_pairs_to_kafka() {
    let _isolated = testkit::isolate::module(module_path!());
    let Some(brokers) = testkit::kafka::test_broker("the_cli_produces_its_pairs_to_kafka") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let topic = testkit::kafka::unique_topic("cli");
    let stats = dir.path().join("stats.json");
    let out = Command::new(env!("CARGO_BIN_EXE_node-worker"))
        .args(["capture", "--read"])
        .arg(capture())
        .arg("--config")
        .arg(config(dir.path(), &brokers, &topic, true))
        .args(["--sink", "kafka", "--stats-json"])
        .arg(&stats)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(stats["sink"]["delivered"], 5);
    assert_eq!(stats["sink"]["accepted"], 5);
    let received = testkit::kafka::consume(&brokers, &topic, 5, Duration::from_secs(20), &[]);
    assert_eq!(received.len(), 5);
    // Same pairs, in order, as the file sink writes (ids differ per run: compare without them).
    let file = dir.path().join("pairs.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_node-worker"))
        .args(["capture", "--read"])
        .arg(capture())
        .arg("--config")
        .arg(config(dir.path(), &brokers, &topic, true))
        .arg("--sink")
        .arg(format!("file:{}", file.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let without_id = |bytes: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v.as_object_mut().unwrap().remove("id");
        v
    };
    let from_file: Vec<_> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| without_id(l.as_bytes()))
        .collect();
    let from_kafka: Vec<_> = received.iter().map(|m| without_id(&m.value)).collect();
    assert_eq!(from_kafka, from_file);
    for m in &received {
        assert_eq!(m.key.as_deref(), Some(&b"63.245.209.11:80"[..]));
        assert!(m
            .headers
            .iter()
            .any(|(k, v)| k == "schema" && v == b"interceptor.pair/v1"));
    }
}

#[test]
fn a_missing_topic_fails_the_run_naming_it() {
    let _isolated = testkit::isolate::module(module_path!());
    let Some(brokers) = testkit::kafka::test_broker("a_missing_topic_fails_the_run_naming_it")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let topic = testkit::kafka::unique_topic("absent");
    let out = Command::new(env!("CARGO_BIN_EXE_node-worker"))
        .args(["capture", "--read"])
        .arg(capture())
        .arg("--config")
        .arg(config(dir.path(), &brokers, &topic, false))
        .args(["--sink", "kafka"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().last().unwrap().contains(&topic), "{stderr}");
}

#[test]
fn a_property_the_worker_owns_is_refused_at_load() {
    let _isolated = testkit::isolate::module(module_path!());
    let dir = tempfile::tempdir().unwrap();
    for key in ["delivery.report.only.error", "enable.delivery.reports"] {
        let path = dir.path().join("owned.yaml");
        std::fs::write(
            &path,
            format!("kafka: {{brokers: [\"127.0.0.1:9\"], properties: {{{key}: \"false\"}}}}\n"),
        )
        .unwrap();
        // Refused whatever the sink: it is the config that is wrong.
        for sink in ["kafka", "stdout"] {
            let out = Command::new(env!("CARGO_BIN_EXE_node-worker"))
                .args(["capture", "--read"])
                .arg(capture())
                .arg("--config")
                .arg(&path)
                .args(["--sink", sink])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{key}, {sink}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "kafka.properties: \"{key}\" cannot be set: the worker needs every delivery report"
                )),
                "{stderr}"
            );
            assert!(out.stdout.is_empty());
        }
    }
}

/// With no broker at the address, librdkafka reports the same errors every second or faster
/// (`AllBrokersDown`, `Connect ... failed`): each kind is logged once, then at most once a minute.
#[test]
fn an_unreachable_broker_is_logged_once_per_kind_not_every_second() {
    let _isolated = testkit::isolate::module(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.yaml");
    // Port 9 (discard) has no listener here: every connection attempt is refused at once.
    std::fs::write(
        &path,
        "kafka: {brokers: [\"127.0.0.1:9\"], topic: t, properties: {\"reconnect.backoff.max.ms\": \"100\"}}\n",
    )
    .unwrap();
    // Waits for the topic check (15 s) that cannot succeed: 5 s of it are enough.
    let mut child = Command::new(env!("CARGO_BIN_EXE_node-worker"))
        .args(["capture", "--read"])
        .arg(capture())
        .arg("--config")
        .arg(&path)
        .args(["--sink", "kafka", "--log-format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN" || v["level"] == "ERROR")
        .collect();
    let messages: Vec<&str> = warnings
        .iter()
        .map(|v| v["fields"]["message"].as_str().unwrap_or(""))
        .collect();
    let all_down = messages
        .iter()
        .filter(|m| m.contains("AllBrokersDown"))
        .count();
    assert_eq!(all_down, 1, "{messages:#?}");
    // One line per kind: the connection refused (librdkafka's log), the transport failure and all
    // brokers down (its errors); a few more kinds are allowed, not one line per retry.
    assert!(
        (2..=6).contains(&warnings.len()),
        "{} warnings in 5 s: {messages:#?}",
        warnings.len()
    );
}
