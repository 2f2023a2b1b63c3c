//! A realistic traffic mix for benchmarks: many concurrent keep-alive connections carrying JSON and
//! form exchanges of every size (gzip, chunked, pipelined), interleaved with every kind of traffic the
//! product's rules drop (other content types, probes, excluded paths, errors, oversize messages,
//! unanswered requests, non-HTTP TCP). Deterministic for a given seed; knows how many pairs the default
//! rules keep, so a benchmark can check the worker's output, not just its speed.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::{chunked, http_request, http_response, Conversation, Frame};

/// What to generate.
#[derive(Clone, Debug)]
pub struct MixOptions {
    /// Stop once this many bytes of frames were written.
    pub target_bytes: u64,
    /// Connections open at once.
    pub connections: usize,
    pub seed: u64,
    /// Capture start time.
    pub start_us: i64,
}

impl Default for MixOptions {
    fn default() -> Self {
        MixOptions {
            target_bytes: 1 << 30,
            connections: 64,
            seed: 1,
            start_us: 1_700_000_000_000_000,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixStats {
    pub frames: u64,
    pub bytes: u64,
    pub connections: u64,
    /// Exchanges per kind (see [`Kind::name`]).
    pub exchanges: BTreeMap<&'static str, u64>,
    /// Pairs the default rules keep.
    pub expected_pairs: u64,
}

/// A small deterministic generator (xorshift64*): no dependency, same stream for the same seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A size spread over orders of magnitude (log-uniform) in `lo..=hi`.
    pub fn size(&mut self, lo: u64, hi: u64) -> usize {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi as f64).ln());
        let x = l + (h - l) * (self.next_u64() % 10_000) as f64 / 10_000.0;
        x.exp() as usize
    }
}

/// The kinds of exchanges in the mix, with their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    JsonSmall,
    JsonLarge,
    Form,
    JsonGzipChunked,
    Pipelined,
    Html,
    Image,
    Probe,
    HealthPath,
    ErrorStatus,
    Oversize,
    Unanswered,
}

const KINDS: &[(Kind, u64)] = &[
    (Kind::JsonSmall, 30),
    (Kind::JsonLarge, 4),
    (Kind::Form, 8),
    (Kind::JsonGzipChunked, 6),
    (Kind::Pipelined, 4),
    (Kind::Html, 12),
    (Kind::Image, 5),
    (Kind::Probe, 6),
    (Kind::HealthPath, 6),
    (Kind::ErrorStatus, 6),
    (Kind::Oversize, 1),
    (Kind::Unanswered, 2),
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::JsonSmall => "json_small",
            Kind::JsonLarge => "json_large",
            Kind::Form => "form",
            Kind::JsonGzipChunked => "json_gzip_chunked",
            Kind::Pipelined => "pipelined_json",
            Kind::Html => "html",
            Kind::Image => "image",
            Kind::Probe => "kube_probe",
            Kind::HealthPath => "health_path",
            Kind::ErrorStatus => "error_status",
            Kind::Oversize => "oversize",
            Kind::Unanswered => "unanswered",
        }
    }

    /// Pairs the default rules keep from one exchange of this kind.
    fn kept_pairs(self) -> u64 {
        match self {
            Kind::JsonSmall | Kind::JsonLarge | Kind::Form | Kind::JsonGzipChunked => 1,
            Kind::Pipelined => 3,
            _ => 0,
        }
    }

    fn pick(rng: &mut Rng) -> Kind {
        let total: u64 = KINDS.iter().map(|(_, w)| w).sum();
        let mut x = rng.range(0, total - 1);
        for &(kind, weight) in KINDS {
            if x < weight {
                return kind;
            }
            x -= weight;
        }
        Kind::JsonSmall
    }
}

/// Text for bodies, sliced to any size without generating it each time.
struct Bodies {
    json: Vec<u8>,
    gzip_cache: BTreeMap<usize, Vec<u8>>,
}

impl Bodies {
    fn new() -> Self {
        let mut json = Vec::with_capacity(2 << 20);
        let mut i = 0u64;
        json.extend_from_slice(b"{\"items\":[");
        while json.len() < (2 << 20) {
            json.extend_from_slice(
                format!("{{\"id\":{i},\"name\":\"user-{i}\",\"email\":\"user{i}@example.com\",\"score\":{}}},", i * 7 % 1000)
                    .as_bytes(),
            );
            i += 1;
        }
        Bodies {
            json,
            gzip_cache: BTreeMap::new(),
        }
    }

    fn json(&self, len: usize) -> &[u8] {
        &self.json[..len.min(self.json.len())]
    }

    /// A gzipped JSON body; sizes are bucketed so that compression runs a few times, not per exchange.
    fn gzip_json(&mut self, len: usize) -> Vec<u8> {
        let bucket = len.next_power_of_two().min(1 << 20);
        if let Some(cached) = self.gzip_cache.get(&bucket) {
            return cached.clone();
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = e.write_all(self.json(bucket));
        let gz = e.finish().unwrap_or_default();
        self.gzip_cache.insert(bucket, gz.clone());
        gz
    }
}

struct Live {
    conv: Conversation,
    /// Exchanges left before this connection closes.
    remaining: u32,
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Writes one exchange of `kind` on `c`.
fn exchange(c: &mut Conversation, kind: Kind, rng: &mut Rng, bodies: &mut Bodies, n: u64) {
    let path = format!("/api/v1/items/{n}");
    match kind {
        Kind::JsonSmall => {
            let req = bodies.json(rng.size(20, 2_000)).to_vec();
            c.client_sends(&http_request("POST", &path, &[JSON], &req));
            c.server_sends(&http_response(
                200,
                &[JSON],
                bodies.json(rng.size(10, 4_000)),
            ));
        }
        Kind::JsonLarge => {
            c.client_sends(&http_request(
                "GET",
                &path,
                &[("Accept", "application/json")],
                b"",
            ));
            c.server_sends(&http_response(
                200,
                &[JSON],
                bodies.json(rng.size(10_000, 400_000)),
            ));
        }
        Kind::Form => {
            let form = format!("name=user{n}&email=user{n}%40example.com&plan=pro&accept=1");
            c.client_sends(&http_request(
                "POST",
                "/signup",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                form.as_bytes(),
            ));
            c.server_sends(&http_response(201, &[JSON], b"{\"created\":true}"));
        }
        Kind::JsonGzipChunked => {
            c.client_sends(&http_request(
                "GET",
                &path,
                &[("Accept-Encoding", "gzip")],
                b"",
            ));
            let gz = bodies.gzip_json(rng.size(500, 200_000));
            let mut res = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            res.extend(chunked(&gz, 8192, &[]));
            c.server_sends(&res);
        }
        Kind::Pipelined => {
            let mut reqs = Vec::new();
            let mut responses = Vec::new();
            for i in 0..3 {
                reqs.extend(http_request("GET", &format!("{path}/{i}"), &[], b""));
                responses.extend(http_response(
                    200,
                    &[JSON],
                    bodies.json(rng.size(10, 1_000)),
                ));
            }
            c.client_sends(&reqs);
            c.server_sends(&responses);
        }
        Kind::Html => {
            c.client_sends(&http_request(
                "GET",
                "/index.html",
                &[("Accept", "text/html")],
                b"",
            ));
            c.server_sends(&http_response(
                200,
                &[("Content-Type", "text/html")],
                bodies.json(rng.size(2_000, 60_000)),
            ));
        }
        Kind::Image => {
            c.client_sends(&http_request("GET", "/logo.png", &[], b""));
            c.server_sends(&http_response(
                200,
                &[("Content-Type", "image/png")],
                bodies.json(rng.size(5_000, 120_000)),
            ));
        }
        Kind::Probe => {
            c.client_sends(&http_request(
                "GET",
                "/ready",
                &[("User-Agent", "kube-probe/1.30")],
                b"",
            ));
            c.server_sends(&http_response(200, &[JSON], b"{\"ok\":true}"));
        }
        Kind::HealthPath => {
            c.client_sends(&http_request("GET", "/healthz", &[], b""));
            c.server_sends(&http_response(200, &[JSON], b"{\"status\":\"up\"}"));
        }
        Kind::ErrorStatus => {
            let status = [400u16, 401, 404, 500, 503][rng.range(0, 4) as usize];
            c.client_sends(&http_request("POST", &path, &[JSON], b"{\"bad\":1}"));
            c.server_sends(&http_response(status, &[JSON], b"{\"error\":\"nope\"}"));
        }
        Kind::Oversize => {
            c.client_sends(&http_request("GET", "/export", &[], b""));
            let big = bodies.json(rng.size(1_100_000, 2_000_000)).to_vec();
            c.server_sends(&http_response(200, &[JSON], &big));
        }
        Kind::Unanswered => {
            c.client_sends(&http_request(
                "POST",
                &path,
                &[JSON],
                b"{\"never\":\"answered\"}",
            ));
        }
    }
}

/// A short connection that is not HTTP (TLS-like bytes both ways).
fn non_http(c: &mut Conversation, rng: &mut Rng) {
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    hello.extend((0..rng.size(200, 3_000)).map(|i| i as u8));
    c.client_sends(&hello);
    c.server_sends(&vec![0x17; rng.size(500, 20_000)]);
    c.close();
}

/// Generates the mix, handing each frame to `out` in capture order.
pub fn generate(
    options: &MixOptions,
    mut out: impl FnMut(&Frame) -> io::Result<()>,
) -> io::Result<MixStats> {
    let mut rng = Rng::new(options.seed);
    let mut bodies = Bodies::new();
    let mut stats = MixStats::default();
    let mut now = options.start_us;
    let mut next_port: u32 = 0;
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 2), 8080));
    let mut new_conv = |rng: &mut Rng, now: i64, stats: &mut MixStats| {
        next_port += 1;
        stats.connections += 1;
        let client_ip = Ipv4Addr::new(
            10,
            2,
            ((next_port >> 8) & 0xff) as u8,
            (next_port & 0xff) as u8,
        );
        let port = 10_000 + (next_port % 50_000) as u16;
        let mut conv = Conversation::new(
            SocketAddr::V4(SocketAddrV4::new(client_ip, port)),
            server,
            now,
        )
        .with_isns(rng.next_u64() as u32, rng.next_u64() as u32);
        conv.step_us = 20;
        conv.handshake();
        Live {
            conv,
            remaining: rng.range(1, 60) as u32,
        }
    };
    let mut live: Vec<Live> = (0..options.connections.max(1))
        .map(|_| new_conv(&mut rng, now, &mut stats))
        .collect();
    let mut n = 0u64;
    while stats.bytes < options.target_bytes {
        let i = rng.range(0, live.len() as u64 - 1) as usize;
        let slot = &mut live[i];
        slot.conv.set_now_us(now);
        if rng.range(0, 99) < 3 {
            // Now and then a connection that is not HTTP at all.
            let mut other = new_conv(&mut rng, now, &mut stats);
            non_http(&mut other.conv, &mut rng);
            *stats.exchanges.entry("non_http").or_default() += 1;
            for f in other.conv.take_frames() {
                stats.frames += 1;
                stats.bytes += f.data.len() as u64;
                out(&f)?;
            }
        }
        let kind = Kind::pick(&mut rng);
        exchange(&mut slot.conv, kind, &mut rng, &mut bodies, n);
        n += 1;
        *stats.exchanges.entry(kind.name()).or_default() += 1;
        stats.expected_pairs += kind.kept_pairs();
        slot.remaining = slot.remaining.saturating_sub(1);
        if kind == Kind::Unanswered {
            // A client that got no answer gives up on the connection (a later response on it would
            // otherwise answer this request, as HTTP/1.1 pairs in order).
            slot.remaining = 0;
        }
        if slot.remaining == 0 {
            slot.conv.close();
        }
        now = slot.conv.now_us() + 50;
        for f in slot.conv.take_frames() {
            stats.frames += 1;
            stats.bytes += f.data.len() as u64;
            out(&f)?;
        }
        if slot.remaining == 0 {
            *slot = new_conv(&mut rng, now, &mut stats);
        }
    }
    for slot in &mut live {
        slot.conv.close();
        for f in slot.conv.take_frames() {
            stats.frames += 1;
            stats.bytes += f.data.len() as u64;
            out(&f)?;
        }
    }
    Ok(stats)
}

/// Writes the mix as a pcap stream.
pub fn write_pcap(options: &MixOptions, out: impl Write) -> io::Result<MixStats> {
    super::generate_pcap(out, |emit| generate(options, emit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_deterministic_and_reaches_its_size() {
        let options = MixOptions {
            target_bytes: 2_000_000,
            connections: 8,
            seed: 7,
            ..MixOptions::default()
        };
        let mut a = Vec::new();
        let sa = write_pcap(&options, &mut a).unwrap();
        let mut b = Vec::new();
        let sb = write_pcap(&options, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert!(sa.bytes >= 2_000_000);
        assert!(sa.expected_pairs > 0);
        assert!(sa.exchanges.len() >= 5, "{:?}", sa.exchanges);
    }
}
