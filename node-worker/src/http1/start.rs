//! The shape of an HTTP/1.x message start (`METHOD SP target` or `HTTP/`), told from its first
//! bytes: how the parser rejects what cannot be a message early, and how detection recognises HTTP/1.

/// What the first bytes of a message look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Request,
    Response,
    /// No HTTP/1.x message starts so.
    Not,
    /// Too few bytes to tell (then they hold no line end).
    Unknown,
}

/// The verdict on any longer prefix is the verdict on its first `DECIDED_WITHIN` bytes: a method is at
/// most 32 token characters, then a space and the target's first byte.
pub const DECIDED_WITHIN: usize = 34;

pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Classifies the beginning of a message cheaply: `METHOD SP` or `HTTP/`.
pub fn classify_start(bytes: &[u8]) -> Start {
    const HTTP: &[u8] = b"HTTP/";
    let n = bytes.len().min(HTTP.len());
    if bytes[..n].eq_ignore_ascii_case(&HTTP[..n]) {
        return if n == HTTP.len() {
            Start::Response
        } else {
            Start::Unknown
        };
    }
    for (i, &b) in bytes.iter().take(33).enumerate() {
        if b == b' ' {
            if i == 0 {
                return Start::Not;
            }
            // The target: origin form, asterisk, absolute form; anything for CONNECT (authority form).
            return match bytes.get(i + 1) {
                None => Start::Unknown,
                Some(b'/' | b'*' | b'h' | b'H') => Start::Request,
                Some(_) if bytes[..i].eq_ignore_ascii_case(b"CONNECT") => Start::Request,
                Some(_) => Start::Not,
            };
        }
        if !is_tchar(b) {
            return Start::Not;
        }
    }
    if bytes.len() > 32 {
        Start::Not
    } else {
        Start::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts() {
        assert_eq!(classify_start(b"GET / HTTP/1.1"), Start::Request);
        assert_eq!(classify_start(b"CONNECT host:443 HTTP/1.1"), Start::Request);
        assert_eq!(classify_start(b"GET http://a/ HTTP/1.1"), Start::Request);
        assert_eq!(classify_start(b"http/1.1 200 OK"), Start::Response);
        assert_eq!(classify_start(b"220 smtp.example.com ESMTP"), Start::Not);
        assert_eq!(classify_start(b"EHLO example.com"), Start::Not);
        assert_eq!(classify_start(b"GET "), Start::Unknown);
        assert_eq!(classify_start(b"HTTP/1.1 200"), Start::Response);
        assert_eq!(classify_start(b"HTT"), Start::Unknown);
        assert_eq!(classify_start(b"GE"), Start::Unknown);
        assert_eq!(classify_start(b"\x16\x03\x01"), Start::Not);
        assert_eq!(classify_start(b" GET"), Start::Not);
        assert_eq!(classify_start(&[b'A'; 40]), Start::Not);
    }

    /// Every prefix of a few shapes: once told, the verdict stays; it never needs more than
    /// `DECIDED_WITHIN` bytes; while unknown, no line has ended (a head cannot be complete).
    #[test]
    fn verdicts_are_final_and_come_early() {
        let long_method = format!("{} / HTTP/1.1\r\n", "M".repeat(32));
        let samples: [&[u8]; 9] = [
            b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            b"GET\r\n\r\n",
            long_method.as_bytes(),
        ];
        for sample in samples {
            let full = classify_start(sample);
            let mut told = None;
            for n in 1..=sample.len() {
                let v = classify_start(&sample[..n]);
                if let Some(t) = told {
                    assert_eq!(v, t, "{sample:?} at {n}");
                } else if v != Start::Unknown {
                    told = Some(v);
                } else {
                    assert!(n < DECIDED_WITHIN, "{sample:?} unknown at {n}");
                    assert!(!sample[..n].contains(&b'\n'));
                }
            }
            assert_eq!(told.unwrap_or(Start::Unknown), full);
        }
    }
}
