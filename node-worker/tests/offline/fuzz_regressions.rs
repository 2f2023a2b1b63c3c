//! Replays the fuzzers' findings: every input under `fuzz/regressions/<target>/` runs through the same
//! harness as the fuzz target of that name (`testkit::fuzz`, which the targets call), which panics on a
//! broken invariant. Each file was a crash, a hang or a broken invariant before its fix (see
//! `fuzz/README.md`); the seed inputs of each target run too, as a smoke test of the harness.

use std::path::{Path, PathBuf};

use node_worker::source::file::FileSource;
use node_worker::synth::{chunked, http_request, http_response};
use testkit::fuzz::{self, DICTIONARY, LINK_TYPES};

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".keep"))
        .collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        eprintln!("{target}: {}", file.display());
        run(&data);
    }
}

#[test]
fn http_connection_regressions() {
    replay("http_connection", fuzz::http_connection);
}

#[test]
fn tcp_reassembly_regressions() {
    replay("tcp_reassembly", fuzz::tcp_reassembly);
}

#[test]
fn pipeline_raw_regressions() {
    replay("pipeline_raw", fuzz::pipeline_raw);
}

#[test]
fn pipeline_tcp_regressions() {
    replay("pipeline_tcp", fuzz::pipeline_tcp);
}

/// The harness on trivial inputs: empty, and a few bytes of each kind.
#[test]
fn harness_smoke() {
    for data in [
        &b""[..],
        b"\x00",
        b"\x03\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x05\x00hello",
    ] {
        fuzz::http_connection(data);
        fuzz::tcp_reassembly(data);
        fuzz::pipeline_raw(data);
        fuzz::pipeline_tcp(data);
    }
}

// ---------------------------------------------------------------------------------------------------
// Seeds

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A raw payload as the structured targets read it.
fn raw(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(2047)];
    out.push(0x80);
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn exchanges() -> Vec<(Vec<u8>, Vec<u8>)> {
    let json = ("Content-Type", "application/json");
    vec![
        (
            http_request("GET", "/api/users/1", &[], b""),
            http_response(200, &[json], b"{\"id\":1}"),
        ),
        (
            http_request("POST", "/v1/x?q=1", &[json, ("Authorization", "Bearer t")], b"{\"a\":[1,2]}"),
            http_response(201, &[json, ("Set-Cookie", "s=1")], b"{}"),
        ),
        (
            http_request("GET", "/healthz", &[("User-Agent", "kube-probe/1.30")], b""),
            http_response(404, &[], b"nope"),
        ),
        (
            http_request("GET", "/stream", &[], b""),
            [
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                chunked(b"{\"chunked\":true}", 5, &[("X-T", "1")]),
            ]
            .concat(),
        ),
        (
            b"POST /f HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\na=1".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
    ]
}

/// Writes the fuzz targets' seed corpora into `fuzz/corpus/<target>/` (run by hand, see
/// `fuzz/README.md`): the shared captures split into packets, and synth conversations encoded for
/// the structured targets.
#[test]
#[ignore]
fn make_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = root.join("corpus");

    // pipeline_raw: every shared capture, 32 packets per seed.
    let captures = root.join("../testdata/corpus/captures");
    let mut n = 0;
    let mut files: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let Ok(mut source) = FileSource::open(&path) else {
            continue;
        };
        let link = source.link_type();
        let Some(index) = LINK_TYPES.iter().position(|l| *l == link) else {
            eprintln!("skipping {} (link type {})", path.display(), link.0);
            continue;
        };
        let mut packets: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut last: Option<i64> = None;
        source.for_each(|p| {
            let step = match last {
                Some(t) => ((p.timestamp_us - t).max(0) / 10_000).min(254) as u8,
                None => 0,
            };
            last = Some(p.timestamp_us);
            packets.push((step, p.data.to_vec()));
        });
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        for (i, group) in packets.chunks(32).enumerate() {
            for config in [0u8, 2] {
                let mut seed = vec![config];
                for (step, data) in group {
                    seed.push(index as u8);
                    seed.push(*step);
                    seed.extend_from_slice(&(data.len().min(65535) as u16).to_le_bytes());
                    seed.extend_from_slice(&data[..data.len().min(65535)]);
                }
                write(
                    &corpus.join("pipeline_raw"),
                    &format!("{stem}-{i}-{config}"),
                    &seed,
                );
                n += 1;
            }
        }
    }
    eprintln!("pipeline_raw: {n} seeds");

    for (i, (request, response)) in exchanges().iter().enumerate() {
        // pipeline_tcp: handshake, request, response, close on connection 0, then the same pipelined on 1.
        for config in [0u8, 2, 3] {
            let mut seed = vec![config, 0, 0, 0, 0, 0, 0];
            let frame =
                |seed: &mut Vec<u8>, c: u8, server: bool, flags: u8, body: Option<&[u8]>| {
                    let op = c | (u8::from(server) << 2) | (u8::from(body.is_some()) << 3);
                    seed.extend_from_slice(&[op, flags, 1]);
                    if let Some(b) = body {
                        raw(seed, b);
                    }
                };
            frame(&mut seed, 0, false, 0x11, None); // SYN without ACK
            frame(&mut seed, 0, true, 0x01, None); // SYN+ACK
            frame(&mut seed, 0, false, 0, None);
            frame(&mut seed, 0, false, 0, Some(request));
            frame(&mut seed, 0, true, 0, Some(response));
            frame(&mut seed, 0, false, 0x02, None);
            frame(&mut seed, 0, true, 0x02, None);
            frame(
                &mut seed,
                1,
                false,
                0,
                Some(&[&request[..], &request[..]].concat()),
            );
            frame(
                &mut seed,
                1,
                true,
                0,
                Some(&[&response[..], &response[..]].concat()),
            );
            write(
                &corpus.join("pipeline_tcp"),
                &format!("exchange-{i}-{config}"),
                &seed,
            );
        }
        // http_connection: client low-to-high, both seen from the start.
        for config in [0u8, 2, 3] {
            let mut seed = vec![config, 1 | 4 | 8, 0, 0, 0, 0, 0, 0, 0, 0];
            seed.push(0); // data, low to high
            raw(&mut seed, request);
            seed.push(7);
            seed.push(1); // data, high to low
            raw(&mut seed, response);
            seed.push(200);
            seed.push(12); // end low to high
            seed.push(13); // end high to low
            write(
                &corpus.join("http_connection"),
                &format!("exchange-{i}-{config}"),
                &seed,
            );
        }
    }
    for (i, entry) in DICTIONARY.iter().enumerate() {
        let mut seed = vec![2u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        seed.push(0);
        raw(&mut seed, entry);
        seed.push(3);
        write(
            &corpus.join("http_connection"),
            &format!("dictionary-{i}"),
            &seed,
        );
    }

    // tcp_reassembly: in order, reordered, overlapping, with a SYN and a FIN.
    let mut seed = vec![0xf0, 0xff, 0xff, 0xff, 0x00, 0x10];
    let segment = |seed: &mut Vec<u8>, offset: u16, len: u8, fill: u8, flags: u8| {
        seed.push(0);
        seed.extend_from_slice(&offset.to_le_bytes());
        seed.extend_from_slice(&[len, fill, flags, 0, 0, 0, 0]);
    };
    segment(&mut seed, 64, 0, 0, 1);
    segment(&mut seed, 65 + 20, 20, 7, 0);
    segment(&mut seed, 65, 30, 7, 0);
    segment(&mut seed, 65 + 10, 40, 9, 0);
    segment(&mut seed, 65 + 50, 0, 0, 2);
    write(&corpus.join("tcp_reassembly"), "reordered", &seed);
    eprintln!("structured seeds written");
}
