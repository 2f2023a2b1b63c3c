//! The public captures of testdata/corpus (from Zeek, Suricata and Arkime test suites): every one runs
//! without a panic and gives exactly the pairs and drops recorded in testdata/corpus-expectations.json,
//! and where the peer's expectation is a complete log (Zeek's http.log), our pairs agree with it except
//! where the expectations file says why we deliberately differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use interceptor_crds::config::WorkerConfig;
use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus")
}

/// Every rule off: the comparison is about parsing and pairing.
fn config() -> WorkerConfig {
    let mut c = testkit::pipeline::open_config();
    c.limits.max_message_bytes = 0;
    c.limits.max_pair_bytes = 0;
    c.limits.response_timeout_seconds = 0;
    c.limits.max_decoded_body_bytes = 100 << 20;
    c
}

fn body_len(message: &Value) -> u64 {
    let body = message["body"].as_str().unwrap_or_default();
    if message["body_base64"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_or(0, |b| b.len() as u64)
    } else {
        body.len() as u64
    }
}

/// (method, target, status, request body bytes, response body bytes) of each pair, in emission order.
fn transactions(capture: &Path) -> (Vec<Value>, BTreeMap<String, u64>) {
    let out = testkit::pipeline::run_file(capture, &config());
    let pairs = out
        .pairs
        .iter()
        .map(|p| {
            serde_json::json!([
                p["request"]["method"],
                p["request"]["path"],
                p["response"]["status"],
                body_len(&p["request"]),
                body_len(&p["response"])
            ])
        })
        .collect();
    let drops = out
        .counters
        .drops_by_reason()
        .map(|(r, n)| (r.as_str().to_string(), n))
        .collect();
    (pairs, drops)
}

fn expectations() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(corpus().join("../corpus-expectations.json")).unwrap();
    let mut map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    map.remove("_comment");
    map
}

fn captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_capture_gives_the_recorded_pairs_and_drops() {
    let expected = expectations();
    let files = captures();
    assert_eq!(files.len(), 43, "the corpus has 43 captures");
    assert_eq!(expected.len(), files.len(), "one expectation per capture");
    let mut mismatches = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let (pairs, drops) = transactions(file);
        let want = &expected[&name];
        let want_drops: BTreeMap<String, u64> =
            serde_json::from_value(want["drops"].clone()).unwrap();
        if want["pairs"].as_array().unwrap() != &pairs || want_drops != drops {
            mismatches.push(format!(
                "{name}:\n  expected {} {:?}\n  got      {} {:?}",
                want["pairs"],
                want_drops,
                Value::Array(pairs),
                drops
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// A peer field that is unset (`null`) matches anything.
fn agrees(peer: &Value, ours: &Value) -> bool {
    peer.is_null() || peer == ours
}

#[test]
fn complete_logs_agree_with_zeek() {
    let expected = expectations();
    let mut compared = 0;
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(corpus().join("expected")).unwrap() {
        let path = entry.unwrap().path();
        let peer: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if !peer["kind"]
            .as_str()
            .unwrap_or_default()
            .starts_with("complete-log")
        {
            continue;
        }
        let name = peer["file"].as_str().unwrap().to_string();
        if expected[&name].get("why").is_some() {
            // A documented, deliberate difference (see the expectations file).
            continue;
        }
        compared += 1;
        let (ours, _) = transactions(&corpus().join("captures").join(&name));
        // Zeek logs requests without responses and responses without requests; we emit only pairs.
        let mut peer_pairs: Vec<Value> = peer["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| !t["method"].is_null() && !t["status"].is_null())
            .map(|t| {
                serde_json::json!([
                    t["method"],
                    t["uri"],
                    t["status"],
                    t["request_body_len"],
                    t["response_body_len"]
                ])
            })
            .collect();
        if peer_pairs.len() != ours.len() {
            problems.push(format!(
                "{name}: Zeek has {} pairs, we have {}",
                peer_pairs.len(),
                ours.len()
            ));
            continue;
        }
        // Zeek logs in completion order per connection; match each of ours to one of its entries.
        for pair in &ours {
            let found = peer_pairs
                .iter()
                .position(|p| (0..5).all(|i| agrees(&p[i], &pair[i])));
            match found {
                Some(i) => {
                    peer_pairs.remove(i);
                }
                None => problems.push(format!("{name}: {pair} is not in Zeek's log")),
            }
        }
    }
    assert_eq!(
        compared, 17,
        "complete logs compared (21 minus the 4 documented differences)"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn captures_also_read_as_pcapng() {
    // libpcap reads pcapng too; convert a few captures with editcap (from Wireshark) when it is here.
    if std::process::Command::new("editcap")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("editcap not installed: pcapng conversion not tested here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "zeek__http-pipelining.pcap",
        "suricata-verify__http-gap-simple.pcap",
    ] {
        let pcap = corpus().join("captures").join(name);
        let pcapng = dir.path().join(format!("{name}ng"));
        let status = std::process::Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(&pcap)
            .arg(&pcapng)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(transactions(&pcap), transactions(&pcapng), "{name}");
    }
}
