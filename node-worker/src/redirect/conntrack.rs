//! Conntrack over netlink (ctnetlink), as far as the redirection needs: "which connection has this
//! reply tuple, and where was it originally going?" The request and the answer are built and read by
//! pure functions ([`get_request`], [`original_destination`]); [`Conntrack`] is the socket, opened inside
//! a pod's network namespace (a netlink socket answers for the namespace it was created in).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
    SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::discovery::{NetnsError, NetnsTarget};

/// Why conntrack could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("netlink: {0}")]
    Socket(#[from] nix::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("conntrack answered with error {0}")]
    Kernel(i32),
    #[error("conntrack's answer is truncated or malformed")]
    Truncated,
    #[error("no answer from conntrack in time")]
    NoAnswer,
}

// netlink and ctnetlink constants (linux/netlink.h, linux/netfilter/nfnetlink*.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_TCP: u8 = 6;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (header, payload, padding).
fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// Appends a nested attribute whose content `fill` writes.
fn put_nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

/// A `IPCTNL_MSG_CT_GET` for the TCP connection whose reply tuple goes `reply_src -> reply_dst` (for a
/// redirected connection: from the proxy's listener to the client). `None` when the two addresses are
/// of different families.
pub fn get_request(seq: u32, reply_src: SocketAddr, reply_dst: SocketAddr) -> Option<Vec<u8>> {
    let (family, src_kind, dst_kind, src, dst): (u8, u16, u16, Vec<u8>, Vec<u8>) =
        match (reply_src.ip(), reply_dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (
                libc::AF_INET as u8,
                CTA_IP_V4_SRC,
                CTA_IP_V4_DST,
                s.octets().to_vec(),
                d.octets().to_vec(),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => (
                libc::AF_INET6 as u8,
                CTA_IP_V6_SRC,
                CTA_IP_V6_DST,
                s.octets().to_vec(),
                d.octets().to_vec(),
            ),
            _ => return None,
        };
    let mut buf = vec![0u8; NLMSG_HDRLEN];
    buf.extend_from_slice(&[family, 0, 0, 0]);
    put_nested(&mut buf, CTA_TUPLE_REPLY, |b| {
        put_nested(b, CTA_TUPLE_IP, |b| {
            put_attr(b, src_kind, &src);
            put_attr(b, dst_kind, &dst);
        });
        put_nested(b, CTA_TUPLE_PROTO, |b| {
            put_attr(b, CTA_PROTO_NUM, &[IPPROTO_TCP]);
            put_attr(b, CTA_PROTO_SRC_PORT, &reply_src.port().to_be_bytes());
            put_attr(b, CTA_PROTO_DST_PORT, &reply_dst.port().to_be_bytes());
        });
    });
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    buf[4..6].copy_from_slice(&kind.to_ne_bytes());
    buf[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    Some(buf)
}

/// The attributes in `data`: (type without flags, payload). Stops at the first malformed one.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*data.first()?, *data.get(1)?]));
        let kind = u16::from_ne_bytes([*data.get(2)?, *data.get(3)?]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = data.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn find(data: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(data).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// What one netlink message in an answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The connection's original destination.
    Found(SocketAddr),
    /// The kernel's error (`-errno`; `-ENOENT`: no such connection).
    Error(i32),
    /// Another message (another sequence number, a type we do not read).
    Other,
}

/// Reads the first netlink message of `buf` answering request `seq`; returns the answer and the length
/// of the message read (to go on with the next one).
pub fn original_destination(buf: &[u8], seq: u32) -> Result<(Answer, usize), ConntrackError> {
    let header = buf.get(..NLMSG_HDRLEN).ok_or(ConntrackError::Truncated)?;
    let word =
        |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let len = usize::try_from(word(0)).map_err(|_| ConntrackError::Truncated)?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    if len < NLMSG_HDRLEN || len > buf.len() {
        return Err(ConntrackError::Truncated);
    }
    let next = align4(len).min(buf.len());
    if word(8) != seq {
        return Ok((Answer::Other, next));
    }
    let body = &buf[NLMSG_HDRLEN..len];
    if kind == NLMSG_ERROR {
        let code = body.get(..4).ok_or(ConntrackError::Truncated)?;
        let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
        return Ok((Answer::Error(code), next));
    }
    if kind == NLMSG_DONE || kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
        return Ok((Answer::Other, next));
    }
    let attributes = body.get(NFGENMSG_LEN..).ok_or(ConntrackError::Truncated)?;
    let tuple = find(attributes, CTA_TUPLE_ORIG).ok_or(ConntrackError::Truncated)?;
    let ip = find(tuple, CTA_TUPLE_IP).ok_or(ConntrackError::Truncated)?;
    let proto = find(tuple, CTA_TUPLE_PROTO).ok_or(ConntrackError::Truncated)?;
    let address = if let Some(v4) = find(ip, CTA_IP_V4_DST) {
        let octets: [u8; 4] = v4.try_into().map_err(|_| ConntrackError::Truncated)?;
        IpAddr::from(octets)
    } else {
        let v6 = find(ip, CTA_IP_V6_DST).ok_or(ConntrackError::Truncated)?;
        let octets: [u8; 16] = v6.try_into().map_err(|_| ConntrackError::Truncated)?;
        IpAddr::from(octets)
    };
    let port = find(proto, CTA_PROTO_DST_PORT).ok_or(ConntrackError::Truncated)?;
    let port: [u8; 2] = port
        .get(..2)
        .and_then(|p| p.try_into().ok())
        .ok_or(ConntrackError::Truncated)?;
    Ok((
        Answer::Found(SocketAddr::new(address, u16::from_be_bytes(port))),
        next,
    ))
}

/// How long one question may wait for its answer (the capture thread waits meanwhile).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(50);

/// A ctnetlink socket in one network namespace (asking needs CAP_NET_ADMIN; once the kernel refuses,
/// the socket is closed and every question is answered "cannot tell", without a system call).
#[derive(Debug)]
pub struct Conntrack {
    fd: Option<OwnedFd>,
    seq: u32,
}

impl Conntrack {
    /// Opens the socket inside `target` (on a short-lived thread that enters it).
    pub fn open_in(target: &NetnsTarget) -> Result<Conntrack, ConntrackError> {
        match target {
            NetnsTarget::Current => Conntrack::open_here(),
            NetnsTarget::Enter { paths, expect } => {
                let handle = crate::discovery::netns::NetnsHandle::open(paths, *expect)?;
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            handle.enter_this_thread()?;
                            Conntrack::open_here()
                        })
                        .join()
                        .unwrap_or(Err(ConntrackError::Netns(NetnsError::Thread)))
                })
            }
        }
    }

    /// Opens the socket in the calling thread's namespace.
    pub fn open_here() -> Result<Conntrack, ConntrackError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let timeout = TimeVal::new(0, ANSWER_TIMEOUT.as_micros() as libc::suseconds_t);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Conntrack {
            fd: Some(fd),
            seq: 0,
        })
    }

    /// The original destination of the TCP connection whose reply goes `reply_src -> reply_dst`.
    pub fn lookup_reply(
        &mut self,
        reply_src: SocketAddr,
        reply_dst: SocketAddr,
    ) -> Result<Option<SocketAddr>, ConntrackError> {
        let answer = self.ask_netlink(reply_src, reply_dst);
        if matches!(answer, Err(ConntrackError::Kernel(code)) if code == -libc::EPERM) {
            self.fd = None;
        }
        answer
    }

    fn ask_netlink(
        &mut self,
        reply_src: SocketAddr,
        reply_dst: SocketAddr,
    ) -> Result<Option<SocketAddr>, ConntrackError> {
        let Some(fd) = self.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return Err(ConntrackError::NoAnswer);
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let Some(request) = get_request(seq, reply_src, reply_dst) else {
            return Ok(None);
        };
        sendto(fd, &request, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        let mut buf = [0u8; 8192];
        // Late answers to earlier questions (timed out) are skipped by their sequence number.
        for _ in 0..8 {
            let n = match recv(fd, &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::Error::EAGAIN) => return Err(ConntrackError::NoAnswer),
                Err(e) => return Err(e.into()),
            };
            let mut at = 0;
            while at < n {
                let (answer, len) = original_destination(&buf[at..n], seq)?;
                match answer {
                    Answer::Found(original) => return Ok(Some(original)),
                    Answer::Error(code) if code == -libc::ENOENT => return Ok(None),
                    Answer::Error(code) => return Err(ConntrackError::Kernel(code)),
                    Answer::Other => at += len.max(1),
                }
            }
        }
        Err(ConntrackError::NoAnswer)
    }
}

impl super::Resolve for Conntrack {
    fn original_destination(
        &mut self,
        client: SocketAddr,
        proxy: SocketAddr,
    ) -> Result<Option<SocketAddr>, ConntrackError> {
        // The reply tuple of a redirected connection goes from the proxy's listener to the client.
        self.lookup_reply(proxy, client)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A CT_NEW answer as the kernel writes it, for the orig tuple `src -> dst`.
    fn answer(seq: u32, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        let (s, d) = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
            (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
            _ => unreachable!(),
        };
        let v6 = src.is_ipv6();
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf.extend_from_slice(&[2, 0, 0, 0]);
        put_nested(&mut buf, CTA_TUPLE_ORIG, |b| {
            put_nested(b, CTA_TUPLE_IP, |b| {
                put_attr(b, if v6 { CTA_IP_V6_SRC } else { CTA_IP_V4_SRC }, &s);
                put_attr(b, if v6 { CTA_IP_V6_DST } else { CTA_IP_V4_DST }, &d);
            });
            put_nested(b, CTA_TUPLE_PROTO, |b| {
                put_attr(b, CTA_PROTO_NUM, &[6]);
                put_attr(b, CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
                put_attr(b, CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
            });
        });
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf[4..6]
            .copy_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW).to_ne_bytes());
        buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        buf
    }

    #[test]
    fn the_request_names_the_reply_tuple() {
        let req = get_request(7, addr("127.0.0.1:15001"), addr("10.1.0.5:40000")).unwrap();
        assert_eq!(req.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize,
            req.len()
        );
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 0x0101);
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 7);
        let reply = find(&req[20..], CTA_TUPLE_REPLY).unwrap();
        let ip = find(reply, CTA_TUPLE_IP).unwrap();
        assert_eq!(find(ip, CTA_IP_V4_SRC), Some(&[127, 0, 0, 1][..]));
        assert_eq!(find(ip, CTA_IP_V4_DST), Some(&[10, 1, 0, 5][..]));
        let proto = find(reply, CTA_TUPLE_PROTO).unwrap();
        assert_eq!(
            find(proto, CTA_PROTO_SRC_PORT),
            Some(&15001u16.to_be_bytes()[..])
        );
        assert!(get_request(1, addr("127.0.0.1:1"), addr("[::1]:2")).is_none());
    }

    #[test]
    fn answers_are_read_for_both_families_and_errors_and_strangers_told_apart() {
        let msg = answer(3, addr("10.1.0.5:40000"), addr("10.2.0.9:8080"));
        assert_eq!(
            original_destination(&msg, 3).unwrap(),
            (Answer::Found(addr("10.2.0.9:8080")), msg.len())
        );
        assert_eq!(original_destination(&msg, 4).unwrap().0, Answer::Other);
        let v6 = answer(5, addr("[fd00::5]:40000"), addr("[fd00::9]:443"));
        assert_eq!(
            original_destination(&v6, 5).unwrap().0,
            Answer::Found(addr("[fd00::9]:443"))
        );
        let mut error = vec![0u8; NLMSG_HDRLEN + 4];
        let len = error.len() as u32;
        error[0..4].copy_from_slice(&len.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[8..12].copy_from_slice(&9u32.to_ne_bytes());
        error[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            original_destination(&error, 9).unwrap().0,
            Answer::Error(-libc::ENOENT)
        );
    }

    #[test]
    fn hostile_answers_are_errors_never_panics() {
        let msg = answer(3, addr("10.1.0.5:40000"), addr("10.2.0.9:8080"));
        for cut in 0..msg.len() {
            let mut bytes = msg[..cut].to_vec();
            if cut >= 4 {
                // A header claiming the whole message over fewer bytes, or the cut length.
                bytes[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            let _ = original_destination(&bytes, 3);
        }
        let mut garbage = msg.clone();
        for b in garbage.iter_mut().skip(20) {
            *b = 0xff;
        }
        assert!(original_destination(&garbage, 3).is_err());
        let mut zero_len = msg;
        zero_len[20..22].copy_from_slice(&0u16.to_ne_bytes());
        assert!(original_destination(&zero_len, 3).is_err());
    }
}
