//! Decode a captured frame down to its TCP segment: link layer (Ethernet with VLAN tags, Linux cooked
//! SLL/SLL2, BSD loopback, raw IP), then IPv4/IPv6 and TCP with etherparse.
//!
//! Pure and allocation-free: the segment borrows the packet's bytes.

use std::net::SocketAddr;

use etherparse::{IpNumber, LaxIpSlice, TcpSlice};

use crate::source::LinkType;

/// The TCP part of a packet, as the reassembler needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub payload: &'a [u8],
    /// Payload bytes that were on the wire but not captured (snaplen); they are a gap for the stream.
    pub missing_tail: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// What a frame turned out to be, when it is not a TCP segment we can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not TCP over IP (ARP, UDP, ICMP, an unknown EtherType, ...).
    NotTcp,
    /// A fragment of an IP datagram: not reassembled.
    Fragment,
    /// Headers truncated or inconsistent, or a link type we do not decode.
    Malformed,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Decodes one frame captured with the given link type.
pub fn decode(link_type: LinkType, frame: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    let ip = link_payload(link_type, frame)?;
    decode_ip(ip)
}

/// Strips the link-layer header; returns the IP packet.
fn link_payload(link_type: LinkType, frame: &[u8]) -> Result<&[u8], Skip> {
    match link_type {
        LinkType::ETHERNET => {
            let mut ethertype = be16(frame, 12)?;
            let mut offset = 14;
            // 802.1Q / 802.1ad tags, possibly stacked.
            while matches!(
                ethertype,
                ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
            ) {
                ethertype = be16(frame, offset + 2)?;
                offset += 4;
            }
            ip_by_ethertype(ethertype, frame.get(offset..).ok_or(Skip::Malformed)?)
        }
        LinkType::LINUX_SLL => {
            // 16-byte header; the protocol (an EtherType for IP) is its last two bytes.
            ip_by_ethertype(be16(frame, 14)?, frame.get(16..).ok_or(Skip::Malformed)?)
        }
        LinkType::LINUX_SLL2 => {
            // 20-byte header starting with the protocol.
            ip_by_ethertype(be16(frame, 0)?, frame.get(20..).ok_or(Skip::Malformed)?)
        }
        LinkType::NULL | LinkType::LOOP => {
            // 4-byte address family, in the capturing host's byte order (NULL) or network order (LOOP).
            let raw: [u8; 4] = frame
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(Skip::Malformed)?;
            let family = if link_type == LinkType::LOOP {
                u32::from_be_bytes(raw)
            } else if u32::from_le_bytes(raw) < 256 {
                u32::from_le_bytes(raw)
            } else {
                u32::from_be_bytes(raw)
            };
            match family {
                // AF_INET; AF_INET6 differs per BSD (24, 28, 30) and Linux (10).
                2 | 10 | 24 | 28 | 30 => Ok(&frame[4..]),
                _ => Err(Skip::NotTcp),
            }
        }
        LinkType::RAW
        | LinkType::RAW_OPENBSD
        | LinkType::LINKTYPE_RAW
        | LinkType::IPV4
        | LinkType::IPV6 => Ok(frame),
        _ => Err(Skip::Malformed),
    }
}

fn ip_by_ethertype(ethertype: u16, payload: &[u8]) -> Result<&[u8], Skip> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(payload),
        _ => Err(Skip::NotTcp),
    }
}

fn be16(bytes: &[u8], at: usize) -> Result<u16, Skip> {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(Skip::Malformed),
    }
}

/// Decodes an IPv4 or IPv6 packet (with extension headers) carrying TCP.
pub fn decode_ip(packet: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    match packet.first().map(|b| b >> 4) {
        Some(4) | Some(6) => {}
        _ => return Err(Skip::Malformed),
    }
    let (ip, _ext_error) = LaxIpSlice::from_slice(packet).map_err(|_| Skip::Malformed)?;
    let payload = ip.payload();
    if payload.fragmented {
        return Err(Skip::Fragment);
    }
    if payload.ip_number != IpNumber::TCP {
        return Err(Skip::NotTcp);
    }
    // The length the IP header claims for its payload, to learn how much of the segment snaplen cut.
    let claimed_len = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            usize::from(h.total_len()).saturating_sub(h.slice().len())
        }
        LaxIpSlice::Ipv6(v6) => {
            let exts_len = packet.len().saturating_sub(40 + payload.payload.len());
            usize::from(v6.header().payload_length()).saturating_sub(exts_len)
        }
    };
    let tcp = TcpSlice::from_slice(payload.payload).map_err(|_| Skip::Malformed)?;
    let data = tcp.payload();
    let missing_tail = if payload.incomplete {
        let header_len = usize::from(tcp.data_offset()) * 4;
        claimed_len
            .saturating_sub(header_len)
            .saturating_sub(data.len())
    } else {
        0
    };
    Ok(TcpSegment {
        src: SocketAddr::new(ip.source_addr(), tcp.source_port()),
        dst: SocketAddr::new(ip.destination_addr(), tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        },
        payload: data,
        missing_tail: u32::try_from(missing_tail).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_ipv4(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 8080, 1000, 65535)
            .ack(77)
            .psh();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let frame = tcp_ipv4(b"GET / HTTP/1.1\r\n\r\n");
        let seg = decode(LinkType::ETHERNET, &frame).unwrap();
        assert_eq!(seg.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:8080".parse().unwrap());
        assert_eq!(seg.seq, 1000);
        assert_eq!(seg.ack, 77);
        assert!(seg.flags.ack && !seg.flags.syn);
        assert_eq!(seg.payload, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(seg.missing_tail, 0);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut frame = tcp_ipv4(b"");
        frame.extend_from_slice(&[0; 6]);
        assert_eq!(decode(LinkType::ETHERNET, &frame).unwrap().payload, b"");
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(5.try_into().unwrap())
            .ipv6([1; 16], [2; 16], 64)
            .tcp(1, 2, 3, 4);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"hi").unwrap();
        let seg = decode(LinkType::ETHERNET, &frame).unwrap();
        assert_eq!(seg.payload, b"hi");
        assert!(seg.src.is_ipv6());
    }

    #[test]
    fn other_link_types() {
        let frame = tcp_ipv4(b"abc");
        let ip = &frame[14..];
        assert_eq!(decode(LinkType::RAW, ip).unwrap().payload, b"abc");
        assert_eq!(decode(LinkType::LINKTYPE_RAW, ip).unwrap().payload, b"abc");
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(ip);
        assert_eq!(decode(LinkType::LINUX_SLL, &sll).unwrap().payload, b"abc");
        let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(ip);
        assert_eq!(decode(LinkType::LINUX_SLL2, &sll2).unwrap().payload, b"abc");
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        assert_eq!(decode(LinkType::NULL, &null).unwrap().payload, b"abc");
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(ip);
        assert_eq!(decode(LinkType::LOOP, &lo).unwrap().payload, b"abc");
    }

    #[test]
    fn snaplen_truncation_is_reported_as_missing_tail() {
        let frame = tcp_ipv4(&[b'x'; 100]);
        let seg = decode(LinkType::ETHERNET, &frame[..frame.len() - 30]).unwrap();
        assert_eq!(seg.payload.len(), 70);
        assert_eq!(seg.missing_tail, 30);
    }

    #[test]
    fn not_tcp_and_garbage() {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2);
        let mut udp = Vec::new();
        builder.write(&mut udp, b"x").unwrap();
        assert_eq!(decode(LinkType::ETHERNET, &udp), Err(Skip::NotTcp));
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&0x0806u16.to_be_bytes());
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(decode(LinkType::ETHERNET, &arp), Err(Skip::NotTcp));
        assert_eq!(decode(LinkType::ETHERNET, &[0; 5]), Err(Skip::Malformed));
        assert_eq!(decode(LinkType::RAW, &[0x45, 0, 0]), Err(Skip::Malformed));
        assert_eq!(decode(LinkType(9999), &[0; 60]), Err(Skip::Malformed));
        let frame = tcp_ipv4(b"abc");
        // IPv4 header claims a TCP header that is cut off.
        assert_eq!(
            decode(LinkType::ETHERNET, &frame[..14 + 20 + 10]),
            Err(Skip::Malformed)
        );
    }

    #[test]
    fn fragments_are_skipped() {
        let mut frame = tcp_ipv4(b"abcdefgh");
        // Set "more fragments" in the IPv4 header (flags at byte 6 of the IP header).
        frame[14 + 6] |= 0x20;
        // Fix the checksum is unnecessary: etherparse does not verify it.
        assert_eq!(decode(LinkType::ETHERNET, &frame), Err(Skip::Fragment));
    }
}
