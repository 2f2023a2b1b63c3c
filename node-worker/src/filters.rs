//! The product's rules, compiled from `config.yaml` into cheap checks on message heads and sizes.
//!
//! Pure functions: each check says why a pair is dropped, or nothing. The pairing stage applies them as
//! early as the information exists (request head, response head, each body byte count).

use interceptor_crds::config::{StatusMatcher, WorkerConfig};

use crate::app::head::MessageHead;
use crate::stats::DropReason;

#[derive(Clone, Debug)]
pub struct Rules {
    /// `None`: rule switched off.
    pub max_message_bytes: Option<u64>,
    pub max_pair_bytes: Option<u64>,
    /// Microseconds a request waits for its response; `None`: until its connection ends.
    pub response_timeout_us: Option<i64>,
    pub max_decoded_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_pending_requests: usize,
    /// Lower-case media types; empty: every content type is kept.
    content_types: Vec<Vec<u8>>,
    /// Lower-case prefixes.
    user_agent_prefixes: Vec<Vec<u8>>,
    exclude_headers: Vec<String>,
    statuses: Vec<StatusMatcher>,
    paths: Vec<Vec<u8>>,
    /// Header names whose values are masked in the pair message.
    pub mask_headers: Vec<String>,
}

fn positive(n: u64) -> Option<u64> {
    (n > 0).then_some(n)
}

fn lower(items: &[String]) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|s| s.trim().to_ascii_lowercase().into_bytes())
        .collect()
}

impl Rules {
    /// Compiles a validated config. Invalid status patterns were refused by validation; any that slip
    /// through are ignored rather than matched wrongly.
    pub fn from_config(config: &WorkerConfig) -> Rules {
        let l = &config.limits;
        let f = &config.filters;
        Rules {
            max_message_bytes: positive(l.max_message_bytes),
            max_pair_bytes: positive(l.max_pair_bytes),
            response_timeout_us: positive(l.response_timeout_seconds)
                .map(|s| i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
            max_decoded_body_bytes: usize::try_from(l.max_decoded_body_bytes).unwrap_or(usize::MAX),
            max_header_bytes: usize::try_from(l.max_header_bytes).unwrap_or(usize::MAX),
            max_pending_requests: usize::try_from(l.max_pending_requests).unwrap_or(usize::MAX),
            content_types: lower(&f.content_types),
            user_agent_prefixes: lower(&f.exclude_user_agent_prefixes),
            exclude_headers: f.exclude_headers.clone(),
            statuses: f
                .exclude_status_codes
                .iter()
                .filter_map(|s| StatusMatcher::parse(s).ok())
                .collect(),
            paths: f
                .exclude_paths
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            mask_headers: config.redaction.mask_headers.clone(),
        }
    }

    /// Rules on a request head alone: user agent, excluded headers, path.
    pub fn check_request(&self, head: &MessageHead) -> Result<(), DropReason> {
        if !self.user_agent_prefixes.is_empty() {
            if let Some(ua) = head.header("user-agent") {
                let ua = ua.trim_ascii_start();
                if self
                    .user_agent_prefixes
                    .iter()
                    .any(|p| ua.len() >= p.len() && ua[..p.len()].eq_ignore_ascii_case(p))
                {
                    return Err(DropReason::UserAgent);
                }
            }
        }
        self.check_excluded_headers(head)?;
        if !self.paths.is_empty() {
            let path = origin_path(head.path());
            if self.paths.iter().any(|p| p.as_slice() == path) {
                return Err(DropReason::ExcludedPath);
            }
        }
        Ok(())
    }

    /// Rules on a response head alone: status, excluded headers.
    pub fn check_response(&self, head: &MessageHead) -> Result<(), DropReason> {
        if let Some(status) = head.status() {
            if self.statuses.iter().any(|m| m.matches(status)) {
                return Err(DropReason::StatusCode);
            }
        }
        self.check_excluded_headers(head)
    }

    fn check_excluded_headers(&self, head: &MessageHead) -> Result<(), DropReason> {
        if self
            .exclude_headers
            .iter()
            .any(|name| head.has_header(name))
        {
            return Err(DropReason::ExcludedHeader);
        }
        Ok(())
    }

    /// Whether this half's Content-Type is one of the allowed types (always, when the rule is off).
    pub fn content_type_allowed(&self, head: &MessageHead) -> bool {
        if self.content_types.is_empty() {
            return true;
        }
        let Some(value) = head.header("content-type") else {
            return false;
        };
        let media_type = value
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        self.content_types
            .iter()
            .any(|allowed| media_type.eq_ignore_ascii_case(allowed))
    }

    pub fn message_too_large(&self, wire_bytes: u64) -> bool {
        self.max_message_bytes.is_some_and(|max| wire_bytes > max)
    }

    pub fn pair_too_large(&self, wire_bytes: u64) -> bool {
        self.max_pair_bytes.is_some_and(|max| wire_bytes > max)
    }

    /// The size rules for a message of `message` bytes in a pair of `pair` bytes so far.
    pub fn check_sizes(&self, message: u64, pair: u64) -> Result<(), DropReason> {
        if self.message_too_large(message) {
            Err(DropReason::MessageTooLarge)
        } else if self.pair_too_large(pair) {
            Err(DropReason::PairTooLarge)
        } else {
            Ok(())
        }
    }

    pub fn should_mask(&self, header_name: &[u8]) -> bool {
        self.mask_headers
            .iter()
            .any(|m| m.as_bytes().eq_ignore_ascii_case(header_name))
    }
}

/// The path of a request target in absolute form (`http://host/path`) or origin form (`/path`).
fn origin_path(path: &[u8]) -> &[u8] {
    let lower_starts = |p: &[u8]| path.len() >= p.len() && path[..p.len()].eq_ignore_ascii_case(p);
    for scheme in [&b"http://"[..], b"https://"] {
        if lower_starts(scheme) {
            let rest = &path[scheme.len()..];
            return match memchr::memchr(b'/', rest) {
                Some(i) => &rest[i..],
                None => b"/",
            };
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::{parse_request, parse_response};

    fn rules() -> Rules {
        Rules::from_config(&WorkerConfig::default())
    }

    fn req(extra: &str, target: &str) -> MessageHead {
        parse_request(format!("GET {target} HTTP/1.1\r\nHost: a\r\n{extra}\r\n").into_bytes())
            .unwrap()
    }

    fn res(status: u16, extra: &str) -> MessageHead {
        parse_response(format!("HTTP/1.1 {status} X\r\n{extra}\r\n").into_bytes()).unwrap()
    }

    #[test]
    fn content_types_with_parameters_and_case() {
        let r = rules();
        assert!(r.content_type_allowed(&res(
            200,
            "Content-Type: Application/JSON; charset=utf-8\r\n"
        )));
        assert!(r.content_type_allowed(&res(
            200,
            "content-type: application/x-www-form-urlencoded\r\n"
        )));
        assert!(!r.content_type_allowed(&res(200, "Content-Type: text/html\r\n")));
        assert!(!r.content_type_allowed(&res(200, "Content-Type: application/jsonp\r\n")));
        assert!(!r.content_type_allowed(&res(200, "")));
        let mut off = WorkerConfig::default();
        off.filters.content_types.clear();
        assert!(Rules::from_config(&off).content_type_allowed(&res(200, "")));
    }

    #[test]
    fn user_agents_headers_and_paths() {
        let r = rules();
        assert_eq!(
            r.check_request(&req("User-Agent: kube-probe/1.29\r\n", "/")),
            Err(DropReason::UserAgent)
        );
        assert_eq!(
            r.check_request(&req("User-Agent: curl/8 kube-probe\r\n", "/")),
            Ok(())
        );
        assert_eq!(
            r.check_request(&req("x-soveren-request: 1\r\n", "/")),
            Err(DropReason::ExcludedHeader)
        );
        assert_eq!(
            r.check_request(&req("", "/healthz?x=1")),
            Err(DropReason::ExcludedPath)
        );
        assert_eq!(r.check_request(&req("", "/healthz/x")), Ok(()));
        assert_eq!(
            r.check_request(&req("", "/metrics")),
            Err(DropReason::ExcludedPath)
        );
        assert_eq!(
            r.check_request(&req("", "http://svc:8080/api/v2/alive")),
            Err(DropReason::ExcludedPath)
        );
        assert_eq!(r.check_request(&req("", "/api/v2/alive2")), Ok(()));
        assert_eq!(
            r.check_response(&res(200, "X-Soveren-Request: y\r\n")),
            Err(DropReason::ExcludedHeader)
        );
    }

    #[test]
    fn statuses_at_their_boundaries() {
        let r = rules();
        for (status, dropped) in [
            (200, false),
            (299, false),
            (300, false),
            (301, true),
            (302, false),
            (307, false),
            (308, true),
            (399, false),
            (400, true),
            (404, true),
            (499, true),
            (500, true),
            (599, true),
        ] {
            assert_eq!(
                r.check_response(&res(status, "")).is_err(),
                dropped,
                "{status}"
            );
        }
    }

    #[test]
    fn sizes_at_their_boundaries() {
        let r = rules();
        assert_eq!(r.check_sizes(1_048_576, 1_048_576), Ok(()));
        assert_eq!(
            r.check_sizes(1_048_577, 1_048_577),
            Err(DropReason::MessageTooLarge)
        );
        assert_eq!(r.check_sizes(10, 1_048_577), Err(DropReason::PairTooLarge));
        let mut off = WorkerConfig::default();
        off.limits.max_message_bytes = 0;
        off.limits.max_pair_bytes = 0;
        assert_eq!(
            Rules::from_config(&off).check_sizes(u64::MAX, u64::MAX),
            Ok(())
        );
    }

    #[test]
    fn every_filter_can_be_switched_off() {
        let mut config = WorkerConfig::default();
        config.filters.exclude_user_agent_prefixes.clear();
        config.filters.exclude_headers.clear();
        config.filters.exclude_paths.clear();
        config.filters.exclude_status_codes.clear();
        let r = Rules::from_config(&config);
        let head = req(
            "User-Agent: kube-probe/1\r\nX-Soveren-Request: 1\r\n",
            "/healthz",
        );
        assert_eq!(r.check_request(&head), Ok(()));
        assert_eq!(r.check_response(&res(500, "")), Ok(()));
    }
}
