//! Content-Encoding decoding (gzip, deflate, br), with the decoded size capped so that a small
//! compressed body cannot expand without bound (a decompression bomb is a counted drop).

use std::io::Read;

use crate::stats::DropReason;

/// Decodes `body` according to a Content-Encoding header value (codings applied in order, so they are
/// undone in reverse). `Ok(None)`: nothing to decode (no or identity encoding, or an empty body).
pub fn decode(
    body: &[u8],
    content_encoding: Option<&[u8]>,
    max_decoded: usize,
) -> Result<Option<Vec<u8>>, DropReason> {
    let Some(value) = content_encoding else {
        return Ok(None);
    };
    if body.is_empty() {
        return Ok(None);
    }
    let codings: Vec<&[u8]> = value
        .split(|&b| b == b',')
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
        .collect();
    if codings.is_empty() {
        return Ok(None);
    }
    let mut current: Option<Vec<u8>> = None;
    for coding in codings.iter().rev() {
        let input = current.as_deref().unwrap_or(body);
        current = Some(decode_one(input, coding, max_decoded)?);
    }
    Ok(current)
}

fn decode_one(input: &[u8], coding: &[u8], max: usize) -> Result<Vec<u8>, DropReason> {
    let lower = coding.to_ascii_lowercase();
    match lower.as_slice() {
        b"gzip" | b"x-gzip" => inflate_capped(input, Wrapper::Gzip, max),
        b"deflate" => {
            // Servers send zlib-wrapped deflate (as the RFC says) or raw deflate; accept both.
            let looks_zlib = input.len() >= 2
                && input[0] & 0x0f == 8
                && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0;
            let wrapper = if looks_zlib {
                Wrapper::Zlib
            } else {
                Wrapper::Raw
            };
            inflate_capped(input, wrapper, max)
        }
        b"br" => read_capped(brotli::Decompressor::new(input, 4096), max),
        _ => Err(DropReason::BodyDecode),
    }
}

/// How a deflate stream is wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrapper {
    /// gzip members (RFC 1952), one after the other; each one's CRC is checked.
    Gzip,
    /// zlib (RFC 1950).
    Zlib,
    /// Raw deflate (RFC 1951).
    Raw,
}

/// First output size for a compressed input of `len` bytes: JSON and text compress 4 to 10 times, so
/// the output rarely has to grow (each growth copies what is decoded so far).
fn first_capacity(len: usize, max: usize) -> usize {
    len.saturating_mul(6).max(4096).min(max.saturating_add(1))
}

/// Inflates `input` into at most `max` bytes (more is a [`DropReason::DecodedTooLarge`]). Works on
/// the decompressor directly, so the output is written once, without being zeroed first as a
/// `Read`-based loop does.
fn inflate_capped(input: &[u8], wrapper: Wrapper, max: usize) -> Result<Vec<u8>, DropReason> {
    let new_decompressor = || match wrapper {
        Wrapper::Gzip => flate2::Decompress::new_gzip(15),
        Wrapper::Zlib => flate2::Decompress::new(true),
        Wrapper::Raw => flate2::Decompress::new(false),
    };
    let limit = max.saturating_add(1);
    let mut out = Vec::with_capacity(first_capacity(input.len(), max));
    let mut inflater = new_decompressor();
    // Where the current gzip member starts in `input`.
    let mut member = 0usize;
    loop {
        let at = member.saturating_add(usize::try_from(inflater.total_in()).unwrap_or(usize::MAX));
        let rest = input.get(at..).unwrap_or_default();
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(DropReason::DecodedTooLarge);
            }
            // Doubling, up to one byte past `max` (which tells a body that is too large).
            let room = limit - out.len();
            out.reserve_exact(out.len().max(4096).min(room));
        }
        let (in_before, out_before) = (inflater.total_in(), out.len());
        let status = inflater
            .decompress_vec(rest, &mut out, flate2::FlushDecompress::None)
            .map_err(|_| DropReason::BodyDecode)?;
        if out.len() > max {
            return Err(DropReason::DecodedTooLarge);
        }
        match status {
            flate2::Status::StreamEnd => {
                let end = member
                    .saturating_add(usize::try_from(inflater.total_in()).unwrap_or(usize::MAX));
                let trailing = input.get(end..).unwrap_or_default();
                // Another gzip member follows (as `MultiGzDecoder` reads them); anything else after
                // the stream is ignored.
                if wrapper == Wrapper::Gzip && trailing.starts_with(&[0x1f, 0x8b]) {
                    member = end;
                    inflater = new_decompressor();
                    continue;
                }
                return Ok(out);
            }
            flate2::Status::Ok | flate2::Status::BufError => {
                let progress = inflater.total_in() != in_before || out.len() != out_before;
                let output_full = out.len() == out.capacity();
                if !progress && !output_full {
                    // The input ended inside the stream.
                    return Err(DropReason::BodyDecode);
                }
            }
        }
    }
}

fn read_capped(reader: impl Read, max: usize) -> Result<Vec<u8>, DropReason> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| DropReason::BodyDecode)?;
    if out.len() > max {
        return Err(DropReason::DecodedTooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_deflate_brotli_and_stacked() {
        let text = b"{\"hello\":\"world\"}".repeat(10);
        assert_eq!(
            decode(&gzip(&text), Some(b"gzip"), 1 << 20)
                .unwrap()
                .unwrap(),
            text
        );
        assert_eq!(
            decode(&gzip(&text), Some(b"X-Gzip"), 1 << 20)
                .unwrap()
                .unwrap(),
            text
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode(&z.finish().unwrap(), Some(b"deflate"), 1 << 20)
                .unwrap()
                .unwrap(),
            text
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(&text).unwrap();
        assert_eq!(
            decode(&d.finish().unwrap(), Some(b"deflate"), 1 << 20)
                .unwrap()
                .unwrap(),
            text
        );
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(&text)
            .unwrap();
        assert_eq!(decode(&br, Some(b"br"), 1 << 20).unwrap().unwrap(), text);
        let twice = gzip(&gzip(&text));
        assert_eq!(
            decode(&twice, Some(b"gzip, gzip"), 1 << 20)
                .unwrap()
                .unwrap(),
            text
        );
    }

    #[test]
    fn identity_and_empty() {
        assert_eq!(decode(b"abc", None, 10), Ok(None));
        assert_eq!(decode(b"abc", Some(b"identity"), 10), Ok(None));
        assert_eq!(decode(b"", Some(b"gzip"), 10), Ok(None));
    }

    #[test]
    fn bombs_garbage_and_unknown_codings() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            decode(&bomb, Some(b"gzip"), 1 << 20),
            Err(DropReason::DecodedTooLarge)
        );
        assert_eq!(
            decode(&vec![0u8; 1 << 20], Some(b"gzip"), 1 << 20).unwrap_err(),
            DropReason::BodyDecode
        );
        assert_eq!(
            decode(b"not gzip", Some(b"gzip"), 100),
            Err(DropReason::BodyDecode)
        );
        assert_eq!(
            decode(b"abc", Some(b"compress"), 100),
            Err(DropReason::BodyDecode)
        );
        let exact = gzip(&[b'a'; 100]);
        assert_eq!(
            decode(&exact, Some(b"gzip"), 100).unwrap().unwrap().len(),
            100
        );
        assert_eq!(
            decode(&exact, Some(b"gzip"), 99),
            Err(DropReason::DecodedTooLarge)
        );
    }

    /// What the `Read`-based decoders (this module's former implementation) give: the reference.
    fn reference(input: &[u8], wrapper: Wrapper, max: usize) -> Result<Vec<u8>, DropReason> {
        match wrapper {
            Wrapper::Gzip => read_capped(flate2::read::MultiGzDecoder::new(input), max),
            Wrapper::Zlib => read_capped(flate2::read::ZlibDecoder::new(input), max),
            Wrapper::Raw => read_capped(flate2::read::DeflateDecoder::new(input), max),
        }
    }

    fn compressed(data: &[u8], wrapper: Wrapper) -> Vec<u8> {
        let level = flate2::Compression::fast();
        match wrapper {
            Wrapper::Gzip => gzip(data),
            Wrapper::Zlib => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Wrapper::Raw => {
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    #[test]
    fn gzip_members_one_after_the_other_are_all_read() {
        let mut two = gzip(b"first,");
        two.extend(gzip(b"second"));
        assert_eq!(
            inflate_capped(&two, Wrapper::Gzip, 100).unwrap(),
            b"first,second"
        );
        assert_eq!(
            reference(&two, Wrapper::Gzip, 100).unwrap(),
            b"first,second"
        );
        assert_eq!(
            inflate_capped(&two, Wrapper::Gzip, 11),
            Err(DropReason::DecodedTooLarge)
        );
    }

    proptest::proptest! {
        /// Whole, cut short, or with any bytes flipped: the same outcome as the reference decoders
        /// (output, too large, or undecodable), at every size limit.
        #[test]
        fn inflating_agrees_with_the_read_decoders(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            repeat in 1usize..40,
            wrapper in proptest::sample::select(vec![Wrapper::Gzip, Wrapper::Zlib, Wrapper::Raw]),
            cut in proptest::option::of(0usize..5000),
            flip in proptest::option::of((0usize..5000, 1u8..=255)),
            max in proptest::sample::select(vec![0usize, 1, 100, 4096, 20_000, 1 << 20]),
        ) {
            let plain: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
            let mut input = compressed(&plain, wrapper);
            if let Some((at, bits)) = flip {
                if !input.is_empty() {
                    let at = at % input.len();
                    input[at] ^= bits;
                }
            }
            if let Some(cut) = cut {
                input.truncate(cut);
            }
            proptest::prop_assert_eq!(
                inflate_capped(&input, wrapper, max),
                reference(&input, wrapper, max)
            );
        }
    }
}
