//! The body of the `http2_decoders` fuzz target: HTTP/2 frames and HPACK header blocks from
//! untrusted bytes, below the connection (whose own target, `http_connection`, reaches HTTP/2 when
//! its input starts with the preface). The offline tests replay it too (`offline/http2_fuzz.rs`).
//!
//! Invariants checked: reading in arbitrary pieces gives the same frames as reading whole; a header
//! block never yields more than the list limit, and the HPACK table never holds more than its cap;
//! nothing panics, whatever the bytes (late-join mode or not).

use node_worker::http2::frame::{Event, FrameReader, Kind, FLAG_END_HEADERS};
use node_worker::http2::head;
use node_worker::http2::hpack::Decoder;

/// A frame event with its content copied; consecutive contents merged (splits do not matter).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Start(u8, u8, u32, Option<u32>),
    Content(Vec<u8>),
    End,
    Control(String),
    Skipped(String),
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Data => 0,
        Kind::Headers => 1,
        Kind::Priority => 2,
        Kind::RstStream => 3,
        Kind::Settings => 4,
        Kind::PushPromise => 5,
        Kind::Ping => 6,
        Kind::GoAway => 7,
        Kind::WindowUpdate => 8,
        Kind::Continuation => 9,
        Kind::Unknown(c) => c,
    }
}

fn read(bytes: &[u8], cuts: &[usize], preface: bool) -> (Vec<Seen>, bool) {
    let mut reader = FrameReader::new(preface, 1 << 14);
    let mut seen: Vec<Seen> = Vec::new();
    let mut ok = true;
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.clamp(from, bytes.len());
        let result = reader.read(&bytes[from..cut], &mut |e| match e {
            Event::Start { header, promised } => seen.push(Seen::Start(
                kind_code(header.kind),
                header.flags,
                header.stream,
                promised,
            )),
            Event::Content(c) => match seen.last_mut() {
                Some(Seen::Content(prev)) => prev.extend_from_slice(c),
                _ => seen.push(Seen::Content(c.to_vec())),
            },
            Event::End(_) => seen.push(Seen::End),
            Event::Control { header, control } => {
                seen.push(Seen::Control(format!("{header:?} {control:?}")))
            }
            Event::Skipped { header, why } => seen.push(Seen::Skipped(format!("{header:?} {why}"))),
        });
        if result.is_err() {
            ok = false;
            break;
        }
        from = cut;
    }
    (seen, ok)
}

pub fn http2_decoders(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let preface = selector & 1 != 0;
    let from_start = selector & 2 != 0;
    let cap = if selector & 4 != 0 { 256 } else { 4096 };
    let max_list = if selector & 8 != 0 { 300 } else { 65536 };
    // Cuts every `step` bytes, step from the selector.
    let step = usize::from(selector >> 4) + 1;
    let cuts: Vec<usize> = (step..rest.len()).step_by(step).collect();
    let (whole, ok_whole) = read(rest, &[], preface);
    let (pieces, ok_pieces) = read(rest, &cuts, preface);
    if ok_whole {
        assert!(ok_pieces, "a preface read whole is read in pieces");
        assert_eq!(whole, pieces, "the same frames however the bytes are cut");
    }
    // Every header block (a HEADERS frame's content and its CONTINUATIONs, as sent) through HPACK.
    let mut decoder = Decoder::new(from_start, cap);
    let mut block: Option<Vec<u8>> = None;
    let mut ends_block = false;
    for s in &whole {
        match s {
            Seen::Start(kind, flags, _, _) => {
                if *kind == 1 || *kind == 5 {
                    block = Some(Vec::new());
                }
                ends_block = matches!(kind, 1 | 5 | 9) && flags & FLAG_END_HEADERS != 0;
            }
            Seen::Content(c) => {
                if let Some(b) = block.as_mut() {
                    b.extend_from_slice(c);
                }
            }
            Seen::End if ends_block => {
                if let Some(b) = block.take() {
                    let decoded = match decoder.decode(&b, max_list) {
                        Ok(d) => d,
                        Err((d, _)) => d,
                    };
                    assert!(decoded.list_size <= max_list);
                    assert!(decoder.table_size() <= cap);
                    let _ = head::request_head(&decoded.fields, 1);
                    let _ = head::response_head(&decoded.fields, 1);
                }
            }
            _ => {}
        }
    }
    // The raw bytes as one header block too: HPACK alone.
    let mut decoder = Decoder::new(from_start, cap);
    for piece in rest.chunks(step * 7) {
        let decoded = match decoder.decode(piece, max_list) {
            Ok(d) => d,
            Err((d, _)) => d,
        };
        assert!(decoded.list_size <= max_list);
        assert!(decoder.table_size() <= cap);
    }
}
