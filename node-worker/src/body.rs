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
        b"gzip" | b"x-gzip" => read_capped(flate2::read::MultiGzDecoder::new(input), max),
        b"deflate" => {
            // Servers send zlib-wrapped deflate (as the RFC says) or raw deflate; accept both.
            let looks_zlib = input.len() >= 2
                && input[0] & 0x0f == 8
                && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0;
            if looks_zlib {
                read_capped(flate2::read::ZlibDecoder::new(input), max)
            } else {
                read_capped(flate2::read::DeflateDecoder::new(input), max)
            }
        }
        b"br" => read_capped(brotli::Decompressor::new(input, 4096), max),
        _ => Err(DropReason::BodyDecode),
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
}
