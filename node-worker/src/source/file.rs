//! Packets from a pcap or pcapng file, read with libpcap.

use std::path::Path;

use super::{LinkType, Packet};

/// Why a capture file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read capture file {path}: {reason}")]
    Open { path: String, reason: String },
}

/// How reading a capture file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEnd {
    /// Every packet was read.
    Complete,
    /// The file ended in the middle of a packet or is corrupt after some point; the packets before it
    /// were processed.
    Truncated(String),
}

pub struct FileSource {
    capture: pcap::Capture<pcap::Offline>,
    link_type: LinkType,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<Self, FileError> {
        let open_error = |reason: String| FileError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Err(e) = std::fs::metadata(path) {
            return Err(open_error(e.to_string()));
        }
        let capture = pcap::Capture::from_file_with_precision(path, pcap::Precision::Micro)
            .map_err(|e| open_error(e.to_string()))?;
        let link_type = LinkType(capture.get_datalink().0);
        Ok(FileSource { capture, link_type })
    }

    pub fn link_type(&self) -> LinkType {
        self.link_type
    }

    /// Hands every packet to `each`, in file order.
    pub fn for_each(&mut self, mut each: impl FnMut(&Packet<'_>)) -> FileEnd {
        loop {
            match self.capture.next_packet() {
                Ok(p) => {
                    let ts = &p.header.ts;
                    // timeval fields are i64 here but narrower on some platforms.
                    #[allow(clippy::useless_conversion)]
                    let packet = Packet {
                        timestamp_us: i64::from(ts.tv_sec)
                            .saturating_mul(1_000_000)
                            .saturating_add(i64::from(ts.tv_usec)),
                        link_type: self.link_type,
                        data: p.data,
                        orig_len: p.header.len,
                    };
                    each(&packet);
                }
                Err(pcap::Error::NoMorePackets) => return FileEnd::Complete,
                Err(e) => return FileEnd::Truncated(e.to_string()),
            }
        }
    }
}
