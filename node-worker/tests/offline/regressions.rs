//! Captures recorded by the live tests at a lossy or reordering capture point (see issue 3): keep-alive
//! and pipelined exchanges whose server echoes each request body, with segments lost, duplicated or
//! captured out of order. Whatever is lost, no emitted pair may join a request with another request's
//! response. The counts pin down how much survives, so that a change that loses more is noticed too.

use std::path::Path;

fn check(name: &str, expected_pairs: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/regressions")
        .join(name);
    let out = testkit::pipeline::run_file(&path, &testkit::pipeline::open_config());
    let wrong: Vec<String> = out
        .pairs
        .iter()
        .filter(|p| {
            let request = p["request"]["body"].as_str().unwrap();
            p["response"]["body"].as_str().unwrap() != format!("{{\"echo\":{request}}}")
        })
        .map(|p| format!("{} <- {}", p["request"]["body"], p["response"]["body"]))
        .collect();
    assert!(
        wrong.is_empty(),
        "{name}: wrong pairs:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        out.pairs.len(),
        expected_pairs,
        "{name}: {}",
        out.counters.summary()
    );
}

#[test]
fn keep_alive_with_a_fifth_of_the_frames_lost() {
    // Request 22 lost, response 22 seen: it once paired with request 21.
    check("keepalive-loss-off-by-one.pcap", 31);
}

#[test]
fn a_response_captured_before_its_request() {
    check("reorder-response-before-request.pcap", 43);
}

#[test]
fn pipelined_requests_lost_at_the_start_of_a_connection() {
    check("loss-pipelined.pcap", 38);
}

#[test]
fn loss_duplication_and_reordering_together() {
    check("loss-dup-reorder.pcap", 39);
}

#[test]
fn loss_and_requests_captured_late() {
    // 39 since the requests complete before a hole in the client stream are kept (issue 15, item 2).
    check("loss-and-late-request.pcap", 39);
}

#[test]
fn pipelined_responses_captured_before_their_requests() {
    // Two responses arrive before any request bytes; the server had received four pipelined requests.
    check("pipelined-responses-before-requests.pcap", 35);
}
