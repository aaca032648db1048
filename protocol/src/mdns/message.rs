//! DNS messages (RFC 1035 §4.1) as mDNS uses them (RFC 6762 §18): header, questions with the
//! QU bit, resource records with the cache-flush bit, and the record data of PTR, SRV, TXT, A,
//! AAAA, NSEC and CNAME; other types are kept as opaque octets. Unicast DNS (`crate::resolve`)
//! uses the same codec with the RD and RA flags.
use std::net::{Ipv4Addr, Ipv6Addr};

use super::name::{Compressor, Name};
use super::Error;

/// Header field offsets (RFC 1035 §4.1.1).
mod field {
    pub const ID: usize = 0;
    pub const FLAGS: usize = 2;
    pub const QDCOUNT: usize = 4;
    pub const ANCOUNT: usize = 6;
    pub const NSCOUNT: usize = 8;
    pub const ARCOUNT: usize = 10;
    pub const HEADER_LEN: usize = 12;
}
pub use field::HEADER_LEN;

/// Header flag bits (RFC 1035 §4.1.1).
pub mod flags {
    /// Response (1) or query (0).
    pub const QR: u16 = 0x8000;
    pub const OPCODE_MASK: u16 = 0x7800;
    /// Authoritative answer: set in every mDNS response (RFC 6762 §18.4).
    pub const AA: u16 = 0x0400;
    /// Truncated: in an mDNS query, more known answers follow (RFC 6762 §18.5).
    pub const TC: u16 = 0x0200;
    /// Recursion desired: set in a unicast query to a recursive resolver.
    pub const RD: u16 = 0x0100;
    /// Recursion available (unicast responses).
    pub const RA: u16 = 0x0080;
    pub const RCODE_MASK: u16 = 0x000F;
}

/// The top bit of the class: QU ("unicast response wanted") in a question (RFC 6762 §5.4),
/// cache-flush in a record (RFC 6762 §10.2).
const CLASS_TOP_BIT: u16 = 0x8000;
/// Class IN (RFC 1035 §3.2.4).
pub const CLASS_IN: u16 = 1;
/// QCLASS `*` (RFC 1035 §3.2.5).
pub const CLASS_ANY: u16 = 255;

/// A record type or QTYPE (RFC 1035 §3.2.2, §3.2.3; RFC 3596; RFC 2782; RFC 4034).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Type(pub u16);

impl Type {
    pub const A: Type = Type(1);
    pub const CNAME: Type = Type(5);
    pub const PTR: Type = Type(12);
    pub const TXT: Type = Type(16);
    pub const AAAA: Type = Type(28);
    pub const SRV: Type = Type(33);
    pub const NSEC: Type = Type(47);
    /// QTYPE `*`.
    pub const ANY: Type = Type(255);
}

/// A question (RFC 1035 §4.1.2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Question {
    pub name: Name,
    pub qtype: Type,
    /// Class without the top bit.
    pub qclass: u16,
    /// QU: the asker would like a unicast reply (RFC 6762 §5.4).
    pub unicast_response: bool,
}

impl Question {
    /// A QM question of class IN.
    pub fn new(name: Name, qtype: Type) -> Self {
        Question {
            name,
            qtype,
            qclass: CLASS_IN,
            unicast_response: false,
        }
    }
}

/// Record data of the types mDNS discovery uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(Name),
    /// An alias: the canonical name (RFC 1035 §3.3.1).
    Cname(Name),
    /// RFC 2782.
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    /// Character strings, each at most 255 octets (RFC 1035 §3.3.14, RFC 6763 §6).
    Txt(Vec<Vec<u8>>),
    /// RFC 4034 §4; the types are kept sorted and without duplicates.
    Nsec {
        next: Name,
        types: Vec<Type>,
    },
    /// Any other type, its data uninterpreted.
    Other {
        rtype: Type,
        data: Vec<u8>,
    },
}

impl RData {
    pub fn rtype(&self) -> Type {
        match self {
            RData::A(_) => Type::A,
            RData::Aaaa(_) => Type::AAAA,
            RData::Ptr(_) => Type::PTR,
            RData::Cname(_) => Type::CNAME,
            RData::Srv { .. } => Type::SRV,
            RData::Txt(_) => Type::TXT,
            RData::Nsec { .. } => Type::NSEC,
            RData::Other { rtype, .. } => *rtype,
        }
    }

    fn parse(msg: &[u8], start: usize, rtype: Type, len: usize) -> Result<RData, Error> {
        let end = start + len;
        let data = msg.get(start..end).ok_or(Error::Truncated)?;
        // A name inside the record data may be compressed (RFC 6762 §18.14) but must end
        // inside it.
        let name_at = |off: usize| -> Result<Name, Error> {
            let (name, after) = Name::parse(&msg[..end], off)?;
            if after != end {
                return Err(Error::BadRdata);
            }
            Ok(name)
        };
        Ok(match rtype {
            Type::A => RData::A(
                <[u8; 4]>::try_from(data)
                    .map_err(|_| Error::BadRdata)?
                    .into(),
            ),
            Type::AAAA => RData::Aaaa(
                <[u8; 16]>::try_from(data)
                    .map_err(|_| Error::BadRdata)?
                    .into(),
            ),
            Type::PTR => RData::Ptr(name_at(start)?),
            Type::CNAME => RData::Cname(name_at(start)?),
            Type::SRV => {
                let fixed = data.get(..6).ok_or(Error::BadRdata)?;
                RData::Srv {
                    priority: u16::from_be_bytes([fixed[0], fixed[1]]),
                    weight: u16::from_be_bytes([fixed[2], fixed[3]]),
                    port: u16::from_be_bytes([fixed[4], fixed[5]]),
                    target: name_at(start + 6)?,
                }
            }
            Type::TXT => {
                let mut strings = Vec::new();
                let mut rest = data;
                while let Some((&n, tail)) = rest.split_first() {
                    let s = tail.get(..usize::from(n)).ok_or(Error::BadRdata)?;
                    strings.push(s.to_vec());
                    rest = &tail[s.len()..];
                }
                if strings.is_empty() {
                    // RFC 6763 §6.1: an empty TXT record means one empty string.
                    strings.push(Vec::new());
                }
                RData::Txt(strings)
            }
            Type::NSEC => {
                let (next, after) = Name::parse(&msg[..end], start)?;
                RData::Nsec {
                    next,
                    types: parse_type_bitmaps(&msg[after..end])?,
                }
            }
            rtype => RData::Other {
                rtype,
                data: data.to_vec(),
            },
        })
    }

    /// Appends the record data; names go through `comp` when given (compressed).
    fn emit(&self, msg: &mut Vec<u8>, comp: Option<&mut Compressor>) {
        let name = |n: &Name, msg: &mut Vec<u8>, comp: Option<&mut Compressor>| match comp {
            Some(c) => c.emit(n, msg),
            None => n.emit_uncompressed(msg),
        };
        match self {
            RData::A(a) => msg.extend_from_slice(&a.octets()),
            RData::Aaaa(a) => msg.extend_from_slice(&a.octets()),
            RData::Ptr(n) | RData::Cname(n) => name(n, msg, comp),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                msg.extend_from_slice(&priority.to_be_bytes());
                msg.extend_from_slice(&weight.to_be_bytes());
                msg.extend_from_slice(&port.to_be_bytes());
                name(target, msg, comp);
            }
            RData::Txt(strings) if strings.is_empty() => {
                // At least one (empty) string (RFC 6763 §6.1).
                msg.push(0);
            }
            RData::Txt(strings) => {
                for s in strings {
                    let s = &s[..s.len().min(255)];
                    msg.push(s.len() as u8);
                    msg.extend_from_slice(s);
                }
            }
            RData::Nsec { next, types } => {
                // The next domain name is not compressed (RFC 4034 §6.2).
                next.emit_uncompressed(msg);
                emit_type_bitmaps(types, msg);
            }
            RData::Other { data, .. } => msg.extend_from_slice(data),
        }
    }

    /// The record data uncompressed, for lexicographic comparison (RFC 6762 §8.2).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v, None);
        v
    }
}

/// RFC 4034 §4.1.2: blocks of (window, bitmap length 1..=32, bitmap), windows increasing.
fn parse_type_bitmaps(mut data: &[u8]) -> Result<Vec<Type>, Error> {
    let mut types = Vec::new();
    let mut last_window = None;
    while let Some((&window, rest)) = data.split_first() {
        let (&len, rest) = rest.split_first().ok_or(Error::BadRdata)?;
        if len == 0 || len > 32 || last_window.is_some_and(|w| w >= window) {
            return Err(Error::BadRdata);
        }
        let bitmap = rest.get(..usize::from(len)).ok_or(Error::BadRdata)?;
        for (i, &byte) in bitmap.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    types.push(Type(u16::from(window) << 8 | (i * 8 + bit) as u16));
                }
            }
        }
        last_window = Some(window);
        data = &rest[bitmap.len()..];
    }
    Ok(types)
}

fn emit_type_bitmaps(types: &[Type], msg: &mut Vec<u8>) {
    let mut sorted = types.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut i = 0;
    while let Some(first) = sorted.get(i) {
        let window = (first.0 >> 8) as u8;
        let mut bitmap = [0u8; 32];
        let mut len = 0;
        while let Some(t) = sorted.get(i).filter(|t| (t.0 >> 8) as u8 == window) {
            let low = usize::from(t.0 & 0xFF);
            bitmap[low / 8] |= 0x80 >> (low % 8);
            len = low / 8 + 1;
            i += 1;
        }
        msg.push(window);
        msg.push(len as u8);
        msg.extend_from_slice(&bitmap[..len]);
    }
}

/// A resource record (RFC 1035 §4.1.3).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    pub name: Name,
    /// Class without the top bit.
    pub class: u16,
    /// Cache-flush: this record set replaces what caches hold (RFC 6762 §10.2).
    pub cache_flush: bool,
    pub ttl: u32,
    pub data: RData,
}

impl Record {
    /// A record of class IN.
    pub fn new(name: Name, ttl: u32, cache_flush: bool, data: RData) -> Self {
        Record {
            name,
            class: CLASS_IN,
            cache_flush,
            ttl,
            data,
        }
    }

    pub fn rtype(&self) -> Type {
        self.data.rtype()
    }

    /// Same name, type, class and data (the TTL and cache-flush bit aside).
    pub fn same_data(&self, other: &Record) -> bool {
        self.name == other.name && self.class == other.class && self.data == other.data
    }
}

/// A DNS message. The section counts come from the vectors.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Message {
    pub id: u16,
    pub flags: u16,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

fn be16(msg: &[u8], off: usize) -> Result<u16, Error> {
    let b = msg.get(off..off + 2).ok_or(Error::Truncated)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(msg: &[u8], off: usize) -> Result<u32, Error> {
    let b = msg.get(off..off + 4).ok_or(Error::Truncated)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl Message {
    /// An empty mDNS query (id 0, RFC 6762 §18.1).
    pub fn query() -> Self {
        Message::default()
    }

    /// An empty mDNS response: QR and AA set, id 0 (RFC 6762 §18.1-18.4).
    pub fn response() -> Self {
        Message {
            flags: flags::QR | flags::AA,
            ..Message::default()
        }
    }

    pub fn is_response(&self) -> bool {
        self.flags & flags::QR != 0
    }

    pub fn opcode(&self) -> u16 {
        (self.flags & flags::OPCODE_MASK) >> 11
    }

    pub fn rcode(&self) -> u16 {
        self.flags & flags::RCODE_MASK
    }

    /// Parses a whole message; octets after the last record are an error.
    pub fn parse(msg: &[u8]) -> Result<Message, Error> {
        if msg.len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let counts = [
            field::QDCOUNT,
            field::ANCOUNT,
            field::NSCOUNT,
            field::ARCOUNT,
        ]
        .map(|f| be16(msg, f).map(usize::from));
        let [qd, an, ns, ar] = counts;
        let mut m = Message {
            id: be16(msg, field::ID)?,
            flags: be16(msg, field::FLAGS)?,
            ..Message::default()
        };
        let mut pos = field::HEADER_LEN;
        for _ in 0..qd? {
            let (name, after) = Name::parse(msg, pos)?;
            let qtype = Type(be16(msg, after)?);
            let class = be16(msg, after + 2)?;
            m.questions.push(Question {
                name,
                qtype,
                qclass: class & !CLASS_TOP_BIT,
                unicast_response: class & CLASS_TOP_BIT != 0,
            });
            pos = after + 4;
        }
        for (count, section) in [
            (an?, &mut m.answers),
            (ns?, &mut m.authorities),
            (ar?, &mut m.additionals),
        ] {
            for _ in 0..count {
                let (record, after) = Record::parse(msg, pos)?;
                section.push(record);
                pos = after;
            }
        }
        if pos != msg.len() {
            return Err(Error::TrailingData);
        }
        Ok(m)
    }

    /// The message in wire form, names compressed. (A `Vec` rather than `emit(&mut [u8])`:
    /// with compression the length is only known once written.)
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(512);
        msg.extend_from_slice(&self.id.to_be_bytes());
        msg.extend_from_slice(&self.flags.to_be_bytes());
        for n in [
            self.questions.len(),
            self.answers.len(),
            self.authorities.len(),
            self.additionals.len(),
        ] {
            msg.extend_from_slice(&(n.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        }
        let mut comp = Compressor::default();
        for q in self.questions.iter().take(usize::from(u16::MAX)) {
            comp.emit(&q.name, &mut msg);
            msg.extend_from_slice(&q.qtype.0.to_be_bytes());
            let top = if q.unicast_response { CLASS_TOP_BIT } else { 0 };
            msg.extend_from_slice(&(q.qclass | top).to_be_bytes());
        }
        for section in [&self.answers, &self.authorities, &self.additionals] {
            for r in section.iter().take(usize::from(u16::MAX)) {
                r.emit(&mut msg, &mut comp);
            }
        }
        msg
    }
}

impl Record {
    fn parse(msg: &[u8], pos: usize) -> Result<(Record, usize), Error> {
        let (name, after) = Name::parse(msg, pos)?;
        let rtype = Type(be16(msg, after)?);
        let class = be16(msg, after + 2)?;
        let ttl = be32(msg, after + 4)?;
        let len = usize::from(be16(msg, after + 8)?);
        let start = after + 10;
        let data = RData::parse(msg, start, rtype, len)?;
        let record = Record {
            name,
            class: class & !CLASS_TOP_BIT,
            cache_flush: class & CLASS_TOP_BIT != 0,
            ttl,
            data,
        };
        Ok((record, start + len))
    }

    fn emit(&self, msg: &mut Vec<u8>, comp: &mut Compressor) {
        comp.emit(&self.name, msg);
        msg.extend_from_slice(&self.rtype().0.to_be_bytes());
        let top = if self.cache_flush { CLASS_TOP_BIT } else { 0 };
        msg.extend_from_slice(&(self.class | top).to_be_bytes());
        msg.extend_from_slice(&self.ttl.to_be_bytes());
        let len_at = msg.len();
        msg.extend_from_slice(&[0, 0]);
        self.data.emit(msg, Some(comp));
        let len = (msg.len() - len_at - 2).min(usize::from(u16::MAX)) as u16;
        msg[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        Name::from_dotted(s).unwrap()
    }

    /// A response announcing `Studio._apple-midi._udp.local` on host.local:5004, written byte
    /// by byte from the layouts of RFC 1035 §4.1 (header, records, pointers), RFC 2782 (SRV),
    /// RFC 6763 §6 (TXT) and RFC 6762 §18 (flags 0x8400, cache-flush bit on unique records).
    #[rustfmt::skip]
    const ANNOUNCEMENT: &[u8] = &[
        0x00, 0x00, 0x84, 0x00,  0x00, 0x00, 0x00, 0x01,  0x00, 0x00, 0x00, 0x03,
        // 12: answer PTR, "_apple-midi" at 12, "_udp" at 24, "local" at 29.
        11, b'_', b'a', b'p', b'p', b'l', b'e', b'-', b'm', b'i', b'd', b'i',
        4, b'_', b'u', b'd', b'p', 5, b'l', b'o', b'c', b'a', b'l', 0,
        0x00, 0x0C, 0x00, 0x01, 0x00, 0x00, 0x11, 0x94, 0x00, 0x09,
        // 46: "Studio" + pointer to 12.
        6, b'S', b't', b'u', b'd', b'i', b'o', 0xC0, 0x0C,
        // 55: additional SRV, name -> 46, class IN + cache-flush, TTL 120, port 5004,
        // target "host" at 73 + pointer to "local" at 29.
        0xC0, 0x2E, 0x00, 0x21, 0x80, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x0D,
        0x00, 0x00, 0x00, 0x00, 0x13, 0x8C, 4, b'h', b'o', b's', b't', 0xC0, 0x1D,
        // 80: additional TXT, one empty string, TTL 4500.
        0xC0, 0x2E, 0x00, 0x10, 0x80, 0x01, 0x00, 0x00, 0x11, 0x94, 0x00, 0x01, 0x00,
        // 93: additional A, name -> 73, TTL 120, 192.168.1.10.
        0xC0, 0x49, 0x00, 0x01, 0x80, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x04,
        192, 168, 1, 10,
    ];

    fn announcement() -> Message {
        let service = name("_apple-midi._udp.local");
        let instance = service.prepend(b"Studio").unwrap();
        Message {
            answers: vec![Record::new(
                service,
                4500,
                false,
                RData::Ptr(instance.clone()),
            )],
            additionals: vec![
                Record::new(
                    instance.clone(),
                    120,
                    true,
                    RData::Srv {
                        priority: 0,
                        weight: 0,
                        port: 5004,
                        target: name("host.local"),
                    },
                ),
                Record::new(instance, 4500, true, RData::Txt(vec![vec![]])),
                Record::new(
                    name("host.local"),
                    120,
                    true,
                    RData::A(Ipv4Addr::new(192, 168, 1, 10)),
                ),
            ],
            ..Message::response()
        }
    }

    #[test]
    fn announcement_vector() {
        assert_eq!(Message::parse(ANNOUNCEMENT), Ok(announcement()));
        assert_eq!(announcement().to_bytes(), ANNOUNCEMENT);
        let m = Message::parse(ANNOUNCEMENT).unwrap();
        assert!(m.is_response());
        assert_eq!((m.opcode(), m.rcode()), (0, 0));
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An announcement as python-zeroconf 0.154.0 sent it (captured in a test network
    /// namespace): PTR, SRV, an empty TXT (RDLENGTH 0), NSEC with a compressed next name, A.
    pub(crate) const ZEROCONF_ANNOUNCEMENT: &str = "\
        0000840000000005000000000b5f6170706c652d6d696469045f756470056c6f63616c00000c000100001194\
        00090653747564696fc00cc02e0021800100000078000e00000000138c05686f737461c01dc02e0010800100\
        0011940000c049002f8001000000780005c049000140c04900018001000000780004a9fe0001";
    /// Its goodbye: the same records with TTL 0.
    pub(crate) const ZEROCONF_GOODBYE: &str = "\
        0000840000000005000000000b5f6170706c652d6d696469045f756470056c6f63616c00000c000100000000\
        00090653747564696fc00cc02e0021800100000000000e00000000138c05686f737461c01dc02e0010800100\
        0000000000c049002f8001000000000005c049000140c04900018001000000000004a9fe0001";

    #[test]
    fn zeroconf_vectors() {
        let m = Message::parse(&hex(ZEROCONF_ANNOUNCEMENT)).unwrap();
        let instance = name("Studio._apple-midi._udp.local");
        let host = name("hosta.local");
        let data: Vec<&RData> = m.answers.iter().map(|r| &r.data).collect();
        assert_eq!(
            data,
            [
                &RData::Ptr(instance.clone()),
                &RData::Srv {
                    priority: 0,
                    weight: 0,
                    port: 5004,
                    target: host.clone()
                },
                &RData::Txt(vec![vec![]]),
                &RData::Nsec {
                    next: host.clone(),
                    types: vec![Type::A]
                },
                &RData::A(Ipv4Addr::new(169, 254, 0, 1)),
            ]
        );
        assert_eq!(
            m.answers.iter().map(|r| r.cache_flush).collect::<Vec<_>>(),
            [false, true, true, true, true]
        );
        assert_eq!(Message::parse(&m.to_bytes()), Ok(m));
        let bye = Message::parse(&hex(ZEROCONF_GOODBYE)).unwrap();
        assert!(bye.answers.iter().all(|r| r.ttl == 0));
    }

    #[test]
    fn every_truncation_fails() {
        for len in 0..ANNOUNCEMENT.len() {
            assert!(
                Message::parse(&ANNOUNCEMENT[..len]).is_err(),
                "prefix of {len} parsed"
            );
        }
        let mut long = ANNOUNCEMENT.to_vec();
        long.push(0);
        assert_eq!(Message::parse(&long), Err(Error::TrailingData));
    }

    #[test]
    fn query_with_qu_bit_and_known_answer() {
        // A QU question for the service PTR (class 0x8001, RFC 6762 §5.4) and one known answer
        // whose name points back at the question.
        #[rustfmt::skip]
        let bytes = [
            0x00, 0x00, 0x00, 0x00,  0x00, 0x01, 0x00, 0x01,  0x00, 0x00, 0x00, 0x00,
            11, b'_', b'a', b'p', b'p', b'l', b'e', b'-', b'm', b'i', b'd', b'i',
            4, b'_', b'u', b'd', b'p', 5, b'l', b'o', b'c', b'a', b'l', 0,
            0x00, 0x0C, 0x80, 0x01,
            0xC0, 0x0C, 0x00, 0x0C, 0x00, 0x01, 0x00, 0x00, 0x0E, 0x10, 0x00, 0x05,
            2, b'P', b'c', 0xC0, 0x0C,
        ];
        let m = Message::parse(&bytes).unwrap();
        assert!(!m.is_response());
        let q = &m.questions[0];
        assert!(q.unicast_response);
        assert_eq!((q.qtype, q.qclass), (Type::PTR, CLASS_IN));
        let ka = &m.answers[0];
        assert_eq!(ka.ttl, 3600);
        assert!(!ka.cache_flush);
        assert_eq!(ka.data, RData::Ptr(name("Pc._apple-midi._udp.local")));
        assert_eq!(m.to_bytes(), bytes);
        for len in 0..bytes.len() {
            assert!(
                Message::parse(&bytes[..len]).is_err(),
                "prefix of {len} parsed"
            );
        }
    }

    #[test]
    fn rdata_errors() {
        let header = [0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let rec = |rtype: u16, rdata: &[u8]| {
            let mut v = header.to_vec();
            v.extend_from_slice(&[1, b'x', 0]);
            v.extend_from_slice(&rtype.to_be_bytes());
            v.extend_from_slice(&[0, 1, 0, 0, 0, 10]);
            v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            v.extend_from_slice(rdata);
            Message::parse(&v)
        };
        assert_eq!(rec(1, &[1, 2, 3]), Err(Error::BadRdata));
        assert_eq!(rec(28, &[0; 15]), Err(Error::BadRdata));
        assert_eq!(rec(33, &[0; 5]), Err(Error::BadRdata));
        // SRV target running past RDLENGTH.
        assert_eq!(rec(33, &[0, 0, 0, 0, 0, 1, 1, b'a']), Err(Error::Truncated));
        // PTR with a name shorter than RDLENGTH.
        assert_eq!(rec(12, &[0, 0]), Err(Error::BadRdata));
        // TXT string longer than the data.
        assert_eq!(rec(16, &[5, b'a']), Err(Error::BadRdata));
        // NSEC: zero-length bitmap, windows out of order.
        assert_eq!(rec(47, &[0, 0, 0]), Err(Error::BadRdata));
        assert_eq!(rec(47, &[0, 1, 0x40, 0, 1, 0x40]), Err(Error::BadRdata));
        // NSEC for A, TXT, AAAA, SRV (RFC 6762 §6.1 layout), and an opaque type.
        let nsec = rec(47, &[0, 0, 5, 0x40, 0, 0x80, 0x08, 0x40]).unwrap();
        assert_eq!(
            nsec.answers[0].data,
            RData::Nsec {
                next: Name::root(),
                types: vec![Type::A, Type::TXT, Type::AAAA, Type::SRV]
            }
        );
        assert_eq!(
            nsec.answers[0].data.canonical_bytes(),
            [0, 0, 5, 0x40, 0, 0x80, 0x08, 0x40]
        );
        let other = rec(99, &[1, 2]).unwrap();
        assert_eq!(
            other.answers[0].data,
            RData::Other {
                rtype: Type(99),
                data: vec![1, 2]
            }
        );
        assert_eq!(
            rec(16, &[]).unwrap().answers[0].data,
            RData::Txt(vec![vec![]])
        );
        // RDLENGTH past the end.
        let mut v = header.to_vec();
        v.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1]);
        assert_eq!(Message::parse(&v), Err(Error::Truncated));
    }

    /// Labels mostly from a small pool, in either case, so that names share suffixes and the
    /// compressor has work to do.
    fn arb_label() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["local", "LOCAL", "_udp", "_apple-midi", "host", "Studio (2)"])
                .prop_map(str::to_owned),
            1 => "[A-Za-z0-9_ .-]{1,12}",
        ]
    }

    fn arb_name() -> impl Strategy<Value = Name> {
        prop::collection::vec(arb_label(), 0..5)
            .prop_map(|labels| Name::from_labels(labels).unwrap())
    }

    fn arb_rdata() -> impl Strategy<Value = RData> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| RData::A(a.into())),
            any::<[u8; 16]>().prop_map(|a| RData::Aaaa(a.into())),
            arb_name().prop_map(RData::Ptr),
            arb_name().prop_map(RData::Cname),
            (any::<u16>(), any::<u16>(), any::<u16>(), arb_name()).prop_map(|(p, w, port, t)| {
                RData::Srv {
                    priority: p,
                    weight: w,
                    port,
                    target: t,
                }
            }),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4)
                .prop_map(RData::Txt),
            (arb_name(), prop::collection::btree_set(any::<u16>(), 0..8)).prop_map(|(next, t)| {
                RData::Nsec {
                    next,
                    types: t.into_iter().map(Type).collect(),
                }
            }),
            (100u16..250, prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, data)| {
                RData::Other {
                    rtype: Type(t),
                    data,
                }
            }),
        ]
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            arb_name(),
            1u16..300,
            any::<bool>(),
            any::<u32>(),
            arb_rdata(),
        )
            .prop_map(|(name, class, cache_flush, ttl, data)| Record {
                name,
                class,
                cache_flush,
                ttl,
                data,
            })
    }

    proptest! {
        #[test]
        fn round_trip(
            id in any::<u16>(),
            flags in any::<u16>(),
            questions in prop::collection::vec(
                (arb_name(), any::<u16>(), 0u16..0x8000, any::<bool>()).prop_map(|(name, t, qclass, qu)| {
                    Question { name, qtype: Type(t), qclass, unicast_response: qu }
                }),
                0..4,
            ),
            answers in prop::collection::vec(arb_record(), 0..5),
            authorities in prop::collection::vec(arb_record(), 0..3),
            additionals in prop::collection::vec(arb_record(), 0..5),
        ) {
            let m = Message { id, flags, questions, answers, authorities, additionals };
            let bytes = m.to_bytes();
            prop_assert_eq!(Message::parse(&bytes), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = Message::parse(&bytes) {
                prop_assert_eq!(Message::parse(&m.to_bytes()), Ok(m));
            }
        }
    }
}
