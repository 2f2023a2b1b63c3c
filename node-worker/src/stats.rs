//! Counters: what the worker saw, what it emitted, and every drop by reason.
//!
//! Every byte the worker gives up on is accounted for under exactly one [`DropReason`]; the summary, the
//! metrics endpoint and the InterceptorStatus all read these counters.

use std::fmt::Write as _;

use serde::Serialize;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a message, a pair, a packet or a connection was given up on. The names are stable: they appear
        /// in the summary, in metrics labels and in InterceptorStatus.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $doc,)*
                }
            }
        }
    };
}

drop_reasons! {
    MessageTooLarge => "message_too_large", "a request or response above limits.maxMessageBytes";
    PairTooLarge => "pair_too_large", "a pair above limits.maxPairBytes";
    ResponseTimeout => "response_timeout", "a request whose response did not come within limits.responseTimeoutSeconds";
    Unanswered => "unanswered", "a request still waiting for its response when its connection or the capture ended";
    ContentType => "content_type", "neither half has an allowed Content-Type (filters.contentTypes)";
    UserAgent => "user_agent", "the User-Agent starts with an excluded prefix (filters.excludeUserAgentPrefixes)";
    ExcludedHeader => "excluded_header", "the request or response carries an excluded header (filters.excludeHeaders)";
    StatusCode => "status_code", "the response status is excluded (filters.excludeStatusCodes)";
    ExcludedPath => "excluded_path", "the request path is excluded (filters.excludePaths)";
    StreamGap => "stream_gap", "a message lost to missing TCP segments (capture loss or a connection caught mid-way)";
    PairingUncertain => "pairing_uncertain", "a request or response given up because, after packets lost or captured out of order, its partner could not be known for sure";
    HttpParse => "http_parse_error", "a message that is not valid HTTP/1.x";
    HeaderTooLarge => "header_too_large", "a message head above limits.maxHeaderBytes";
    UnmatchedResponse => "unmatched_response", "a response without a request to pair it with";
    TooManyPending => "too_many_pending", "a request beyond limits.maxPendingRequests on one connection";
    BodyDecode => "body_decode_error", "a body whose Content-Encoding could not be decoded";
    DecodedTooLarge => "decoded_too_large", "a gRPC message that decompresses to more than limits.maxDecodedBodyBytes (a body that does is kept as sent, not decoded)";
    FlowBufferFull => "flow_buffer_full", "a message dropped because its connection used limits.maxFlowBufferBytes";
    TotalBufferFull => "total_buffer_full", "a message dropped because all connections together used limits.maxTotalBufferBytes";
    FlowTableFull => "flow_table_full", "a packet of a connection not tracked: limits.maxFlows connections were tracked already";
    SinkFull => "sink_full", "a pair dropped because the output buffer was full";
    SinkFailed => "sink_failed", "a pair the output could not write or deliver";
    SinkPurged => "sink_purged", "a pair purged because Kafka was unreachable longer than kafka.purgeAfterSeconds";
    Http2FrameError => "http2_frame_error", "an HTTP/2 frame that is malformed for its type (RFC 9113 section 6), or out of sequence in a header block";
    Http2FrameTooLarge => "http2_frame_too_large", "an HTTP/2 frame longer than the limits allow (the larger of limits.maxMessageBytes and limits.maxHeaderBytes)";
    Http2HeaderError => "http2_header_error", "an HTTP/2 header block that could not be decoded (HPACK error, a block lost before it) or is not a valid message head";
    Http2HeaderUnknown => "http2_header_unknown", "an HTTP/2 message whose :method or :status refers to a header table entry from before the capture joined the connection";
    Http2StreamReset => "http2_stream_reset", "an HTTP/2 stream reset (RST_STREAM) before its pair was complete";
    Http2GoAway => "http2_goaway", "an HTTP/2 stream beyond the last one a GOAWAY said would be processed";
}

/// Counts of one run of the pipeline. Plain integers: the pipeline is single-threaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets handed to the pipeline.
    pub packets: u64,
    /// Bytes of those packets as captured.
    pub bytes: u64,
    /// Packets that were not TCP over IPv4/IPv6 (ARP, UDP, ICMP, ...): ignored.
    pub packets_not_tcp: u64,
    /// Packets that could not be decoded (truncated or malformed headers, unknown link types).
    pub packets_malformed: u64,
    /// IP fragments (not reassembled; TCP over fragmented IP is rare and is ignored).
    pub packets_fragmented: u64,
    /// Packets of connections that had already closed (late copies, e.g. the same connection seen on
    /// two tapped interfaces of one node): ignored.
    pub packets_after_close: u64,
    /// Packets of connections tracked under another address pair (a Service's NAT seen from two pods'
    /// interfaces): skipped.
    pub packets_mirrored: u64,
    /// TCP connections tracked.
    pub flows: u64,
    /// Second views of connections already tracked (through NAT): not parsed again.
    pub flows_mirrored: u64,
    /// Connections whose bytes were not HTTP (another protocol, TLS): ignored after their first bytes.
    /// HTTP/2 in clear text is decoded, and not counted here.
    pub flows_not_http: u64,
    /// CONNECT tunnels whose bytes are not HTTP/1.x (TLS, another protocol): ignored after their first
    /// bytes. (A tunnel carrying plain HTTP/1.x, as an egress proxy does, is parsed and paired as
    /// usual, and not counted here.)
    pub flows_tunneled: u64,
    /// Connections that switched protocol with `101 Switching Protocols` (WebSocket, ...): nothing
    /// after the switch is parsed. (An upgrade to h2c is decoded as HTTP/2, and not counted here.)
    pub flows_upgraded: u64,
    /// Connections forgotten because they were idle.
    pub flows_expired: u64,
    /// Payload bytes that were already seen (retransmissions, overlaps).
    pub bytes_retransmitted: u64,
    /// Payload bytes missing from the capture (lost segments).
    pub bytes_missing: u64,
    /// HTTP requests parsed (HTTP/1.x messages, HTTP/2 request header blocks).
    pub requests: u64,
    /// HTTP responses parsed (1xx interim responses included).
    pub responses: u64,
    /// Pairs that passed every rule and were handed to the sink.
    pub pairs_emitted: u64,
    /// Pairs not sent because they were the second copy of an exchange between a pod and a sidecar pod
    /// of this node: the sidecar's inbound leg, whose client's own tap sent the exchange.
    pub pairs_sidecar_copies: u64,
    /// Drops, indexed by `DropReason as usize`.
    #[serde(skip)]
    drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    pub fn count_drop(&mut self, reason: DropReason) {
        self.add_drops(reason, 1);
    }

    pub fn add_drops(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Connections not read, each as (name, what it means, count): for the metrics, which say what
    /// each one means where they are scraped.
    pub fn skipped_flows(&self) -> [(&'static str, &'static str, u64); 3] {
        [
            (
                "flows_not_http",
                "Connections whose first bytes are not HTTP (another protocol, TLS): not read",
                self.flows_not_http,
            ),
            (
                "flows_tunneled",
                "CONNECT tunnels that are not HTTP/1.x (TLS, ...): not read after their first bytes (a tunnel carrying plain HTTP is read)",
                self.flows_tunneled,
            ),
            (
                "flows_upgraded",
                "Connections that switched protocol with 101 Switching Protocols (WebSocket, ...): not read after it (h2c is read as HTTP/2)",
                self.flows_upgraded,
            ),
        ]
    }

    /// Non-zero drops, in the stable order of [`DropReason::ALL`].
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.drops(r)))
            .filter(|&(_, n)| n > 0)
    }

    /// The human-readable summary printed to stderr at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "packets: {} ({} bytes); not TCP: {}; malformed: {}; IP fragments: {}; after close: {}; second views: {}",
            self.packets,
            self.bytes,
            self.packets_not_tcp,
            self.packets_malformed,
            self.packets_fragmented,
            self.packets_after_close,
            self.packets_mirrored
        );
        let _ = writeln!(
            out,
            "flows: {} (not HTTP: {}, tunneled: {}, upgraded: {}, expired idle: {}, second views: {}); retransmitted bytes: {}; missing bytes: {}",
            self.flows,
            self.flows_not_http,
            self.flows_tunneled,
            self.flows_upgraded,
            self.flows_expired,
            self.flows_mirrored,
            self.bytes_retransmitted,
            self.bytes_missing
        );
        let _ = write!(
            out,
            "HTTP messages: {} requests, {} responses; pairs emitted: {}",
            self.requests, self.responses, self.pairs_emitted
        );
        if self.pairs_sidecar_copies > 0 {
            let _ = write!(
                out,
                " (and {} second copies skipped: a sidecar's inbound leg)",
                self.pairs_sidecar_copies
            );
        }
        out.push('\n');
        let _ = write!(out, "drops: {}", self.total_drops());
        for (reason, n) in self.drops_by_reason() {
            let _ = write!(
                out,
                "\n  {:<20} {:>10}  {}",
                reason.as_str(),
                n,
                reason.description()
            );
        }
        out.push('\n');
        out
    }

    /// Drops as a JSON object `{reason: count}` (non-zero only), for machine-readable summaries.
    pub fn drops_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.drops_by_reason()
            .map(|(r, n)| (r.as_str().to_string(), n.into()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason_and_summarised() {
        let mut c = Counters::default();
        c.count_drop(DropReason::ContentType);
        c.add_drops(DropReason::StatusCode, 3);
        assert_eq!(c.total_drops(), 4);
        assert_eq!(c.drops(DropReason::StatusCode), 3);
        let summary = c.summary();
        assert!(summary.contains("content_type"), "{summary}");
        assert!(summary.contains("status_code"), "{summary}");
        assert!(!summary.contains("user_agent"), "{summary}");
        assert_eq!(c.drops_json()["status_code"], 3);
    }

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
