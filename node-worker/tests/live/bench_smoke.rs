//! `make bench` still runs: `scripts/bench.sh` in smoke mode (`BENCH_SMOKE=1`: a 5 MB capture, one run of
//! each tool, callgrind on 1 MB, a few seconds of live load when root) with this build's binaries. It
//! checks that the script completes and that its results are there and right (the worker's pairs equal
//! the generator's expected pairs; every live pair belongs together), never how fast anything was:
//! benchmarks are not timed assertions. Parts whose tools are missing and cannot be installed (not root)
//! are skipped by the script, which says so.
use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn make_bench_runs_on_a_tiny_input() {
    let _isolated = testkit::isolate::module(module_path!());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tempfile::Builder::new()
        .prefix("bench-smoke-")
        .tempdir()
        .unwrap();
    let mut command = Command::new("bash");
    command.arg(root.join("scripts/bench.sh"));
    // The smoke settings, whatever the caller's environment says about a real run.
    for (key, _) in std::env::vars() {
        if key.starts_with("BENCH_") {
            command.env_remove(key);
        }
    }
    command
        .env("BENCH_SMOKE", "1")
        .env("BENCH_OUT", out.path())
        .env("NODE_WORKER", env!("CARGO_BIN_EXE_node-worker"))
        .env("CAPTURE_GEN", env!("CARGO_BIN_EXE_capture-gen"));
    let output = command.output().expect("run scripts/bench.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "scripts/bench.sh (smoke) failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let text = std::fs::read_to_string(out.path().join("results.json")).expect("results.json");
    let results: Value = serde_json::from_str(&text).expect("results.json is JSON");
    let offline = results["offline"].as_array().expect("offline results");
    assert_eq!(offline.len(), 1, "{text}");
    let size = &offline[0];
    assert_eq!(size["pairs_match"], true, "{size}");
    assert!(size["expected_pairs"].as_u64().unwrap() > 0, "{size}");
    assert_eq!(size["worker_pairs"], size["expected_pairs"], "{size}");
    assert!(size["worker"]["cpu_s"].is_number(), "{size}");
    assert!(
        size["worker"]["peak_rss_kib"].as_u64().unwrap() > 0,
        "{size}"
    );
    assert!(results["targets"].as_array().is_some_and(|t| !t.is_empty()));
    assert_eq!(results["wrong_output"], serde_json::json!([]), "{text}");
    // The floods (issue 15): one per kind, of 2000 connections in smoke mode, every one of them tracked
    // (under the default maxFlows), with what each cost over the baseline's few.
    let floods = results["floods"].as_array().expect("flood results");
    let kinds: Vec<&str> = floods.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["handshake", "request", "syn"], "{text}");
    for flood in floods {
        assert_eq!(flood["connections"], 2000, "{flood}");
        assert_eq!(flood["flows_tracked"], 2000, "{flood}");
        assert_eq!(flood["flow_table_full"], 0, "{flood}");
        assert!(flood["peak_rss_kib"].as_u64().unwrap() > 0, "{flood}");
        assert!(flood["bytes_per_tracked_connection"].is_i64(), "{flood}");
    }
    let targets = results["targets"].as_array().unwrap();
    assert!(
        targets.iter().any(|t| t["target"]
            .as_str()
            .is_some_and(|t| t.contains("per idle tracked connection"))),
        "{text}"
    );
    let live = results["live"].as_array().unwrap();
    for run in live {
        assert_eq!(run["pairs_wrong"], 0, "{run}");
        assert_eq!(run["pairs_duplicate"], 0, "{run}");
        assert!(run["requests_sent"].as_u64().unwrap() > 0, "{run}");
        assert!(run["pairs_captured"].as_u64().unwrap() > 0, "{run}");
    }
    if testkit::netns::is_root() {
        // As root the live part runs: HTTP/1.1 into a pipe, HTTP/2 (h2load), and into Kafka when the
        // tests' broker is there (`make test` starts it).
        let kinds: Vec<(&str, &str)> = live
            .iter()
            .map(|r| (r["client"].as_str().unwrap(), r["sink"].as_str().unwrap()))
            .collect();
        assert!(kinds.contains(&("wrk", "local")), "{kinds:?}");
        assert!(kinds.contains(&("h2load", "local")), "{kinds:?}");
        if std::env::var_os("INTERCEPTOR_TEST_KAFKA").is_some() {
            assert!(kinds.contains(&("wrk", "kafka")), "{kinds:?}");
        }
    }
}
