//! What the agent checks in gdb's bytes before gdbstub sees them: gdbstub's packet framing,
//! mirrored to bound a packet's length, to tell the target what an `M`/`X` packet says it
//! writes, and to give a bare `qSupported` the feature list gdbstub insists on.
//!
//! gdbstub 0.7 ignores the length field of `M addr,len:data` and `X addr,len:data` and writes
//! whatever data came; it also rejects `qSupported` without features (which the protocol
//! allows) as a malformed packet, and a malformed packet ends the session.

/// Body bytes kept per packet: enough for `M`/`X` with a 64-bit address and length.
const HEAD: usize = 64;

/// What an `M` or `X` packet declares it writes, for the target to compare with the data
/// gdbstub hands it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeclaredWrite {
    /// Not inside an `M`/`X` packet.
    #[default]
    None,
    /// The packet declares this many bytes.
    Len(usize),
    /// The packet's length field is missing or does not parse: no write may happen.
    Malformed,
}

impl DeclaredWrite {
    /// True when a write of `len` bytes agrees with the declaration.
    pub(super) fn allows(self, len: usize) -> bool {
        match self {
            DeclaredWrite::None => true,
            DeclaredWrite::Len(n) => n == len,
            DeclaredWrite::Malformed => false,
        }
    }
}

/// What one byte from gdb becomes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pass {
    /// This byte, unchanged.
    Byte(u8),
    /// Nothing yet: held back until the packet's checksum is known.
    Held,
    /// These bytes instead of the held ones and this one.
    Bytes(Vec<u8>),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    #[default]
    Ready,
    Body,
    Sum1,
    Sum2,
}

/// gdbstub's packet framing (`$body#xx`; any byte outside a packet is a packet of its own),
/// followed byte by byte.
#[derive(Debug)]
pub(super) struct PacketFilter {
    limit: usize,
    state: Scan,
    /// Bytes of the current packet so far.
    len: usize,
    /// The first [`HEAD`] bytes of the current packet's body.
    head: Vec<u8>,
    body_len: usize,
    /// Set from the end of an `M`/`X` body to the end of its packet.
    write: DeclaredWrite,
    /// The `#` and first checksum digit of a featureless `qSupported`, held back.
    held: Vec<u8>,
}

impl PacketFilter {
    /// A filter for packets of at most `limit` bytes (gdbstub's packet buffer).
    pub(super) fn new(limit: usize) -> Self {
        PacketFilter {
            limit,
            state: Scan::Ready,
            len: 0,
            head: Vec::with_capacity(HEAD),
            body_len: 0,
            write: DeclaredWrite::None,
            held: Vec::new(),
        }
    }

    /// What the packet being received declares it writes (for the byte just pushed).
    pub(super) fn declared_write(&self) -> DeclaredWrite {
        self.write
    }

    /// When the next byte ends a packet: whether that packet may need a stopped target, that
    /// is, it is not one of the packets gdb opens a connection with to learn what the stub
    /// supports (those are answered while the attach stop is still on its way).
    pub(super) fn next_byte_ends_packet_for_target(&self) -> bool {
        /// Packets (by prefix) that never touch a vCPU.
        const HANDSHAKE: [&[u8]; 7] = [
            b"qSupported",
            b"vMustReplyEmpty",
            b"QStartNoAckMode",
            b"qXfer:features:read:",
            b"qTStatus",
            b"qAttached",
            b"H",
        ];
        self.state == Scan::Sum2 && !HANDSHAKE.iter().any(|p| self.head.starts_with(p))
    }

    /// Takes one byte from gdb; an error for a packet longer than the limit.
    pub(super) fn push(&mut self, byte: u8) -> Result<Pass, String> {
        if self.len >= self.limit {
            return Err(format!(
                "packet buffer overflow (a packet longer than {} bytes)",
                self.limit
            ));
        }
        self.len += 1;
        let pass = match self.state {
            Scan::Ready => {
                self.write = DeclaredWrite::None;
                if byte == b'$' {
                    self.state = Scan::Body;
                    self.head.clear();
                    self.body_len = 0;
                } else {
                    self.len = 0;
                }
                Pass::Byte(byte)
            }
            Scan::Body if byte == b'#' => {
                self.state = Scan::Sum1;
                self.write = declared_write(&self.head);
                if self.featureless_qsupported() {
                    self.held.push(byte);
                    Pass::Held
                } else {
                    Pass::Byte(byte)
                }
            }
            Scan::Body => {
                if self.head.len() < HEAD {
                    self.head.push(byte);
                }
                self.body_len += 1;
                Pass::Byte(byte)
            }
            Scan::Sum1 => {
                self.state = Scan::Sum2;
                if self.held.is_empty() {
                    Pass::Byte(byte)
                } else {
                    self.held.push(byte);
                    Pass::Held
                }
            }
            Scan::Sum2 => {
                self.state = Scan::Ready;
                self.len = 0;
                if self.held.is_empty() {
                    Pass::Byte(byte)
                } else {
                    let mut held = std::mem::take(&mut self.held);
                    held.push(byte);
                    Pass::Bytes(self.rewrite_qsupported(&held))
                }
            }
        };
        Ok(pass)
    }

    /// `qSupported` or `qSupported:` with nothing after it.
    fn featureless_qsupported(&self) -> bool {
        self.body_len == self.head.len()
            && (self.head == b"qSupported" || self.head == b"qSupported:")
    }

    /// The rest of a featureless `qSupported` (`held` is `#xx`): with a correct checksum, a
    /// feature list saying the client supports nothing gdbstub knows (`multiprocess-`) and
    /// the new checksum; otherwise as it came (gdbstub rejects the checksum as usual).
    fn rewrite_qsupported(&self, held: &[u8]) -> Vec<u8> {
        let sum = |bytes: &[u8]| bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let given = match held {
            [b'#', hi, lo] => hex_digit(*hi)
                .zip(hex_digit(*lo))
                .map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        if given != Some(sum(&self.head)) {
            return held.to_vec();
        }
        let added: &[u8] = if self.head.ends_with(b":") {
            b"multiprocess-"
        } else {
            b":multiprocess-"
        };
        let total = sum(&self.head).wrapping_add(sum(added));
        let mut out = added.to_vec();
        out.extend_from_slice(format!("#{total:02x}").as_bytes());
        out
    }
}

/// gdbstub's hex digits (`x` and `X` count as 0, as in its decoder).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'x' | b'X' => Some(0),
        _ => None,
    }
}

/// The declared length of an `M addr,len:data` or `X addr,len:data` body (its first bytes).
fn declared_write(head: &[u8]) -> DeclaredWrite {
    let Some((&(b'M' | b'X'), rest)) = head.split_first() else {
        return DeclaredWrite::None;
    };
    let separator = |b: &u8| *b == b',' || *b == b':';
    let mut fields = rest.splitn(3, separator);
    let (Some(_addr), Some(len), Some(_data)) = (fields.next(), fields.next(), fields.next())
    else {
        return DeclaredWrite::Malformed;
    };
    if len.is_empty() {
        return DeclaredWrite::Malformed;
    }
    let mut n: usize = 0;
    for &c in len {
        let Some(d) = hex_digit(c) else {
            return DeclaredWrite::Malformed;
        };
        let Some(next) = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(usize::from(d)))
        else {
            return DeclaredWrite::Malformed;
        };
        n = next;
    }
    DeclaredWrite::Len(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `bytes`; returns what gdbstub would get and the declaration seen at the end.
    fn run(bytes: &[u8]) -> (Vec<u8>, DeclaredWrite) {
        let mut f = PacketFilter::new(1 << 16);
        let mut out = Vec::new();
        let mut last = DeclaredWrite::None;
        for &b in bytes {
            match f.push(b).unwrap() {
                Pass::Byte(b) => out.push(b),
                Pass::Held => {}
                Pass::Bytes(v) => out.extend(v),
            }
            if f.declared_write() != DeclaredWrite::None {
                last = f.declared_write();
            }
        }
        (out, last)
    }

    #[test]
    fn write_packets_declare_their_length() {
        assert_eq!(run(b"$M800000,2:11223344#00").1, DeclaredWrite::Len(2));
        assert_eq!(run(b"$X800000,1f:abc#00").1, DeclaredWrite::Len(0x1f));
        assert_eq!(run(b"$X800000,0:#00").1, DeclaredWrite::Len(0));
        for bad in [
            &b"$M800000:11#00"[..],
            b"$M800000,:11#00",
            b"$M800000,zz:11#00",
            b"$M800000,11223344556677889:00#00",
            b"$M#00",
        ] {
            assert_eq!(
                run(bad).1,
                DeclaredWrite::Malformed,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(run(b"$m800000,2#00").1, DeclaredWrite::None);
        assert!(DeclaredWrite::Len(2).allows(2) && !DeclaredWrite::Len(2).allows(4));
        assert!(!DeclaredWrite::Malformed.allows(0) && DeclaredWrite::None.allows(9));
    }

    #[test]
    fn a_featureless_qsupported_gets_a_feature_list() {
        assert_eq!(
            run(b"+$qSupported#37").0,
            b"+$qSupported:multiprocess-#c8".to_vec()
        );
        assert_eq!(
            run(b"$qSupported:#71").0,
            b"$qSupported:multiprocess-#c8".to_vec()
        );
        // A wrong checksum goes through as it came.
        assert_eq!(run(b"$qSupported#38").0, b"$qSupported#38".to_vec());
        // Anything else is untouched.
        for same in [
            &b"$qSupported:multiprocess+#c6"[..],
            b"$qSupportedX#00",
            b"+-\x03",
        ] {
            assert_eq!(run(same).0, same.to_vec());
        }
    }

    #[test]
    fn packets_are_bounded() {
        let mut f = PacketFilter::new(8);
        for &b in b"$abcdef" {
            f.push(b).unwrap();
        }
        f.push(b'#').unwrap();
        assert!(f.push(b'0').is_err());
    }
}
