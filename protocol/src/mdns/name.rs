//! Domain names (RFC 1035 §3.1, §4.1.4): labels, case-insensitive comparison, and name
//! compression on parse and emit.
use core::fmt;
use core::hash::{Hash, Hasher};

use super::Error;

/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest name in wire form, length octets and the root's zero included (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;

/// The two top bits of a length octet: `00` a label, `11` a compression pointer (RFC 1035
/// §4.1.4); `01` and `10` are extended label types (RFC 6891), not used by mDNS.
const LABEL_TYPE_MASK: u8 = 0xC0;
const POINTER: u8 = 0xC0;
/// A pointer is 14 bits: only offsets below this can be pointed at.
const MAX_POINTER_OFFSET: usize = 0x3FFF;

/// A domain name as a list of labels, without the root. Comparison and hashing ignore ASCII
/// case (RFC 1035 §2.3.3, RFC 6762 §16); labels are raw octets (mDNS instance names are UTF-8,
/// RFC 6763 §4.1, and may contain dots or spaces).
#[derive(Clone, Default)]
pub struct Name {
    labels: Vec<Vec<u8>>,
}

impl Name {
    /// The root name (no labels).
    pub fn root() -> Self {
        Name { labels: Vec::new() }
    }

    /// A name from its labels; fails on an empty or over-long label or an over-long name.
    pub fn from_labels<L: AsRef<[u8]>>(labels: impl IntoIterator<Item = L>) -> Result<Self, Error> {
        let labels: Vec<Vec<u8>> = labels.into_iter().map(|l| l.as_ref().to_vec()).collect();
        for l in &labels {
            if l.is_empty() {
                return Err(Error::EmptyLabel);
            }
            if l.len() > MAX_LABEL_LEN {
                return Err(Error::LabelTooLong);
            }
        }
        let name = Name { labels };
        if name.wire_len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong);
        }
        Ok(name)
    }

    /// A name from dotted text such as `_apple-midi._udp.local` (no escapes: use
    /// [`Name::prepend`] for a label that contains dots).
    pub fn from_dotted(text: &str) -> Result<Self, Error> {
        Name::from_labels(text.split('.').filter(|l| !l.is_empty()))
    }

    /// `label` followed by this name, e.g. an instance label before a service type.
    pub fn prepend(&self, label: &[u8]) -> Result<Self, Error> {
        Name::from_labels(core::iter::once(label).chain(self.labels.iter().map(|l| l.as_slice())))
    }

    pub fn labels(&self) -> &[Vec<u8>] {
        &self.labels
    }

    /// The first label, if any.
    pub fn first_label(&self) -> Option<&[u8]> {
        self.labels.first().map(|l| l.as_slice())
    }

    /// This name without its first label (the root stays the root).
    pub fn parent(&self) -> Name {
        Name {
            labels: self.labels.iter().skip(1).cloned().collect(),
        }
    }

    /// Length in uncompressed wire form.
    pub fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| 1 + l.len()).sum::<usize>() + 1
    }

    /// Parses the name at `offset` in `msg` (the whole message, for pointers). Returns the
    /// name and the offset just after it in place (after the first pointer, if any).
    ///
    /// Every pointer must point strictly before the start of the run of labels it ends, so the
    /// runs visited start at ever smaller offsets: that rules out loops without a hop counter.
    pub fn parse(msg: &[u8], offset: usize) -> Result<(Name, usize), Error> {
        let mut labels = Vec::new();
        let mut wire_len = 1;
        let mut pos = offset;
        let mut run_start = offset;
        let mut end = None;
        loop {
            let len = *msg.get(pos).ok_or(Error::Truncated)?;
            match len & LABEL_TYPE_MASK {
                0 if len == 0 => {
                    let end = end.unwrap_or(pos + 1);
                    return Ok((Name { labels }, end));
                }
                0 => {
                    let len = usize::from(len);
                    let label = msg.get(pos + 1..pos + 1 + len).ok_or(Error::Truncated)?;
                    wire_len += 1 + len;
                    if wire_len > MAX_NAME_LEN {
                        return Err(Error::NameTooLong);
                    }
                    labels.push(label.to_vec());
                    pos += 1 + len;
                }
                POINTER => {
                    let low = *msg.get(pos + 1).ok_or(Error::Truncated)?;
                    let target = usize::from(len & !LABEL_TYPE_MASK) << 8 | usize::from(low);
                    if target >= msg.len() {
                        return Err(Error::PointerOutOfRange);
                    }
                    if target >= pos {
                        return Err(Error::ForwardPointer);
                    }
                    if target >= run_start {
                        return Err(Error::PointerLoop);
                    }
                    end.get_or_insert(pos + 2);
                    pos = target;
                    run_start = target;
                }
                _ => return Err(Error::BadLabelType),
            }
        }
    }

    /// Appends this name to `buf` uncompressed (for canonical rdata comparison, RFC 6762 §8.2).
    pub fn emit_uncompressed(&self, buf: &mut Vec<u8>) {
        for l in &self.labels {
            buf.push(l.len() as u8);
            buf.extend_from_slice(l);
        }
        buf.push(0);
    }

    fn suffix_eq(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
    }
}

/// The suffixes already written to a message and where (RFC 1035 §4.1.4): a later name ending
/// in one of them writes its other labels and a pointer.
#[derive(Default, Debug)]
pub struct Compressor {
    written: Vec<(Vec<Vec<u8>>, u16)>,
}

impl Compressor {
    /// Appends `name` to `msg` (which starts at the message's first octet), compressed.
    pub fn emit(&mut self, name: &Name, msg: &mut Vec<u8>) {
        let labels = name.labels();
        for i in 0..labels.len() {
            let suffix = &labels[i..];
            if let Some(&(_, off)) = self
                .written
                .iter()
                .find(|(s, _)| Name::suffix_eq(s, suffix))
            {
                msg.extend_from_slice(&(0xC000 | off).to_be_bytes());
                return;
            }
            if msg.len() <= MAX_POINTER_OFFSET {
                self.written.push((suffix.to_vec(), msg.len() as u16));
            }
            msg.push(labels[i].len() as u8);
            msg.extend_from_slice(&labels[i]);
        }
        msg.push(0);
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        Name::suffix_eq(&self.labels, &other.labels)
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for l in &self.labels {
            state.write_usize(l.len());
            for b in l {
                state.write_u8(b.to_ascii_lowercase());
            }
        }
    }
}

/// Dotted form; dots and backslashes inside a label are escaped with a backslash.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.labels.is_empty() {
            return f.write_str(".");
        }
        for (i, l) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for ch in String::from_utf8_lossy(l).chars() {
                if ch == '.' || ch == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{ch}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_at(msg: &[u8], off: usize) -> Result<Name, Error> {
        Name::parse(msg, off).map(|(n, _)| n)
    }

    #[test]
    fn plain_and_compressed() {
        // "local" at 0, then "_udp" + pointer to 0 at 7, then "x" + pointer to 7 at 15.
        let msg = [
            5, b'l', b'o', b'c', b'a', b'l', 0, // 0..7
            4, b'_', b'u', b'd', b'p', 0xC0, 0, // 7..14
            1, b'x', 0xC0, 7, // 14..18
        ];
        assert_eq!(
            Name::parse(&msg, 0).unwrap(),
            (Name::from_dotted("local").unwrap(), 7)
        );
        assert_eq!(
            Name::parse(&msg, 7).unwrap(),
            (Name::from_dotted("_udp.local").unwrap(), 14)
        );
        assert_eq!(
            Name::parse(&msg, 14).unwrap(),
            (Name::from_dotted("x._udp.LOCAL").unwrap(), 18)
        );
    }

    #[test]
    fn malicious_pointers() {
        // A pointer to itself.
        assert_eq!(parse_at(&[0xC0, 0], 0), Err(Error::ForwardPointer));
        // A pointer forwards.
        assert_eq!(parse_at(&[0xC0, 2, 0], 0), Err(Error::ForwardPointer));
        // Beyond the message.
        assert_eq!(parse_at(&[0xC0, 0x10], 0), Err(Error::PointerOutOfRange));
        assert_eq!(parse_at(&[0xFF, 0xFF], 0), Err(Error::PointerOutOfRange));
        // Backwards, but into its own run: label "a" at 0, pointer at 2 back to 0.
        assert_eq!(parse_at(&[1, b'a', 0xC0, 0], 0), Err(Error::PointerLoop));
        // Two runs pointing at each other: from 4 back to 0 is fine, then 0 -> 4 is forward.
        assert_eq!(
            parse_at(&[1, b'a', 0xC0, 4, 1, b'b', 0xC0, 0], 4),
            Err(Error::ForwardPointer)
        );
        // Truncated pointer, truncated label, missing root.
        assert_eq!(parse_at(&[0xC0], 0), Err(Error::Truncated));
        assert_eq!(parse_at(&[3, b'a'], 0), Err(Error::Truncated));
        assert_eq!(parse_at(&[1, b'a'], 0), Err(Error::Truncated));
        assert_eq!(parse_at(&[], 0), Err(Error::Truncated));
        // Extended label types.
        assert_eq!(parse_at(&[0x41, 0], 0), Err(Error::BadLabelType));
        assert_eq!(parse_at(&[0x80, 0], 0), Err(Error::BadLabelType));
    }

    #[test]
    fn name_length_limit() {
        // 4 labels of 63: 4 * 64 + 1 = 257 octets > 255.
        let mut msg = Vec::new();
        for _ in 0..4 {
            msg.push(63);
            msg.extend_from_slice(&[b'a'; 63]);
        }
        msg.push(0);
        assert_eq!(parse_at(&msg, 0), Err(Error::NameTooLong));
        // The same limit reached through pointers: chains of backwards pointers that each add
        // a label still end at the length check.
        let mut msg = vec![63];
        msg.extend_from_slice(&[b'a'; 63]);
        msg.push(0);
        let mut prev = 0u16;
        for _ in 0..5 {
            let here = msg.len() as u16;
            msg.push(63);
            msg.extend_from_slice(&[b'b'; 63]);
            msg.extend_from_slice(&(0xC000 | prev).to_be_bytes());
            prev = here;
        }
        assert_eq!(parse_at(&msg, prev as usize), Err(Error::NameTooLong));
        assert_eq!(Name::from_labels([[b'a'; 63]; 4]), Err(Error::NameTooLong));
        assert_eq!(Name::from_labels([[b'a'; 64]]), Err(Error::LabelTooLong));
        assert_eq!(Name::from_labels([b""]), Err(Error::EmptyLabel));
        assert!(
            Name::from_labels([&[b'a'; 63][..], &[b'b'; 63], &[b'c'; 63], &[b'd'; 61]]).is_ok()
        );
    }

    #[test]
    fn compressor_reuses_suffixes() {
        let mut c = Compressor::default();
        let mut msg = vec![0u8; 12];
        c.emit(
            &Name::from_dotted("_apple-midi._udp.local").unwrap(),
            &mut msg,
        );
        let second = msg.len();
        c.emit(
            &Name::from_dotted("Studio._apple-midi._udp.local").unwrap(),
            &mut msg,
        );
        let third = msg.len();
        c.emit(&Name::from_dotted("host.LOCAL").unwrap(), &mut msg);
        // "Studio" + pointer to offset 12; "host" + pointer to "local" at 12 + 12 + 5.
        assert_eq!(&msg[second..third], b"\x06Studio\xC0\x0C");
        assert_eq!(&msg[third..], b"\x04host\xC0\x1D");
        let (n, _) = Name::parse(&msg, third).unwrap();
        assert_eq!(n.to_string(), "host.local");
    }

    #[test]
    fn display_escapes_dots() {
        let n = Name::from_dotted("_apple-midi._udp.local")
            .unwrap()
            .prepend(b"A.B")
            .unwrap();
        assert_eq!(n.to_string(), "A\\.B._apple-midi._udp.local");
        assert_eq!(n.first_label(), Some(&b"A.B"[..]));
        assert_eq!(n.parent().to_string(), "_apple-midi._udp.local");
    }
}
