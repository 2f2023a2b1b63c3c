//! The `node-worker capture --read` command line: output, summary, exit codes and hostile files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_node-worker"))
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/corpus/captures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const OPEN: &str = "filters: {contentTypes: [], excludeStatusCodes: []}\n";

fn open_config(dir: &Path) -> String {
    let path = dir.join("open.yaml");
    std::fs::write(&path, OPEN).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn help_explains_the_commands_and_exit_codes() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Exit codes"));
    let out = run(&["capture", "--help"]);
    let help = text(&out.stdout);
    for flag in [
        "--read",
        "--interface",
        "--netns",
        "--discover",
        "--config",
        "--sink",
        "--id-prefix",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn a_capture_file_gives_json_lines_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let out = run(&[
        "capture",
        "--read",
        corpus("zeek__http-pipelining.pcap").to_str().unwrap(),
        "--config",
        &open_config(dir.path()),
        "--stats-json",
        stats.to_str().unwrap(),
        "--node-name",
        "node-a",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines
        .iter()
        .all(|p| p["node"] == "node-a" && p["schema"] == "interceptor.pair/v1"));
    let ids: std::collections::HashSet<_> = lines
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "ids are unique");
    let summary = text(&out.stderr);
    assert!(summary.contains("pairs emitted: 5"), "{summary}");
    assert!(summary.contains("packets: 49"), "{summary}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stats).unwrap()).unwrap();
    assert_eq!(stats["counters"]["pairs_emitted"], 5);
    assert_eq!(stats["sink"]["delivered"], 5);
}

#[test]
fn an_id_prefix_makes_the_output_the_same_for_the_same_input() {
    let dir = tempfile::tempdir().unwrap();
    let config = open_config(dir.path());
    let capture = corpus("zeek__http-pipelining.pcap");
    let with_prefix = |prefix: Option<&str>| {
        let mut args = vec![
            "capture",
            "--read",
            capture.to_str().unwrap(),
            "--config",
            &config,
            "--node-name",
            "n",
        ];
        if let Some(prefix) = prefix {
            args.extend(["--id-prefix", prefix]);
        }
        let out = run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let first = with_prefix(Some("run-1"));
    assert_eq!(first.lines().count(), 5);
    assert_eq!(first, with_prefix(Some("run-1")), "byte for byte");
    let ids: Vec<String> = first
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "\"run-1-0\"",
            "\"run-1-1\"",
            "\"run-1-2\"",
            "\"run-1-3\"",
            "\"run-1-4\""
        ]
    );
    // Without it, every run has its own random prefix.
    assert_ne!(with_prefix(None), with_prefix(None));
}

#[test]
fn default_rules_drop_and_count() {
    // The pipelining capture serves CSS and JavaScript: no allowed content type.
    let out = run(&[
        "capture",
        "--read",
        corpus("zeek__http-pipelining.pcap").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let summary = text(&out.stderr);
    assert!(summary.contains("content_type"), "{summary}");
    assert!(summary.contains("drops: 5"), "{summary}");
}

#[test]
fn the_file_sink_writes_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let out = run(&[
        "capture",
        "--read",
        corpus("zeek__x-gzip.pcap").to_str().unwrap(),
        "--config",
        &open_config(dir.path()),
        "--sink",
        &format!("file:{}", path.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written.lines().count(), 1);
    assert!(written.ends_with('\n'));
}

#[test]
fn bad_usage_and_bad_config_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let capture = corpus("zeek__x-gzip.pcap");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "filters: {excludeStatusCodes: [\"6xx\"]}\n").unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "limits: [").unwrap();
    let not_capture = dir.path().join("not.pcap");
    std::fs::write(
        &not_capture,
        b"this is not a capture file at all, just text",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "capture".into(),
                "--read".into(),
                capture.display().to_string(),
                "--config".into(),
                bad.display().to_string(),
            ],
            "filters.excludeStatusCodes",
        ),
        (
            vec![
                "capture".into(),
                "--read".into(),
                capture.display().to_string(),
                "--config".into(),
                broken.display().to_string(),
            ],
            "not valid YAML",
        ),
        (
            vec![
                "capture".into(),
                "--read".into(),
                capture.display().to_string(),
                "--config".into(),
                "/nonexistent.yaml".into(),
            ],
            "cannot read config",
        ),
        (
            vec![
                "capture".into(),
                "--read".into(),
                "/nonexistent.pcap".into(),
            ],
            "cannot read capture file",
        ),
        (
            vec![
                "capture".into(),
                "--read".into(),
                not_capture.display().to_string(),
            ],
            "cannot read capture file",
        ),
        (
            vec![
                "capture".into(),
                "--read".into(),
                capture.display().to_string(),
                "--sink".into(),
                "nowhere".into(),
            ],
            "unknown --sink",
        ),
        (
            vec![
                "capture".into(),
                "--read".into(),
                capture.display().to_string(),
                "--id-prefix".into(),
                "Not_A_Token".into(),
            ],
            "invalid --id-prefix",
        ),
        (vec!["capture".into()], "required"),
        (
            vec![
                "capture".into(),
                "--interface".into(),
                "eth0".into(),
                "--mesh".into(),
                "istio".into(),
            ],
            "--mesh applies to a pod's loopback",
        ),
        (
            vec![
                "capture".into(),
                "--interface".into(),
                "lo".into(),
                "--mesh".into(),
                "consul".into(),
            ],
            "invalid value 'consul'",
        ),
    ];
    for (args, reason) in cases {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn a_truncated_capture_gives_partial_results_and_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(corpus("zeek__http-pipelining.pcap")).unwrap();
    // Cut in the middle of a packet record, two thirds in.
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &full[..full.len() * 2 / 3 + 7]).unwrap();
    let out = run(&[
        "capture",
        "--read",
        cut.to_str().unwrap(),
        "--config",
        &open_config(dir.path()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pairs = text(&out.stdout).lines().count();
    assert!((1..5).contains(&pairs), "partial results: {pairs}");
    assert!(
        text(&out.stderr).contains("partial"),
        "{}",
        text(&out.stderr)
    );
    // Only the file header: no packets, no error.
    let header_only = dir.path().join("header.pcap");
    std::fs::write(&header_only, &full[..24]).unwrap();
    let out = run(&["capture", "--read", header_only.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("packets: 0"));
}

#[test]
fn garbage_packets_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.pcap");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut w = node_worker::synth::PcapWriter::new(&mut file, 1, 65535).unwrap();
    // Deterministic pseudo-random frames of every size, some with an IPv4 EtherType.
    let mut x: u32 = 12345;
    for i in 0..2000usize {
        let len = i % 300;
        let mut data = Vec::with_capacity(len);
        for _ in 0..len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.push((x >> 16) as u8);
        }
        if len > 14 && i % 2 == 0 {
            data[12] = 0x08;
            data[13] = 0x00;
            data[14] = 0x45;
        }
        w.write(&node_worker::synth::Frame {
            timestamp_us: i as i64,
            data,
        })
        .unwrap();
    }
    let out = run(&["capture", "--read", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stderr);
    assert!(summary.contains("packets: 2000"), "{summary}");
    assert!(summary.contains("malformed"), "{summary}");
}
