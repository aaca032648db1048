//! Network MIDI 2.0 (UDP) datagrams: the `MIDI` signature followed by command packets
//! (M2-124-UM §5). Parse and emit over byte slices; lengths are checked once, nothing panics on
//! input.
//!
//! Command packet (§5.4): byte 0 command code, byte 1 payload length in 32-bit words, bytes 2-3
//! command-specific data, then the payload. Strings are UTF-8, NUL-terminated or not, zero-padded
//! to whole words; we emit them with a terminator (as amidi2net does) and read up to the first
//! NUL (Zephyr sends none when the text fills its last word).

/// Every datagram starts with these four bytes.
pub const SIGNATURE: [u8; 4] = *b"MIDI";
/// Bytes of a command packet header.
pub const HEADER_LEN: usize = 4;
/// Bytes of an authentication nonce (§6.7) and of a SHA-256 digest (§6.9).
pub const NONCE_LEN: usize = 16;
pub const DIGEST_LEN: usize = 32;
/// Largest payload a command can carry: its length field is one byte of words.
pub const MAX_PAYLOAD_WORDS: usize = 255;

/// Command codes (§5.5).
pub mod code {
    pub const INVITATION: u8 = 0x01;
    pub const INVITATION_WITH_AUTH: u8 = 0x02;
    pub const INVITATION_WITH_USER_AUTH: u8 = 0x03;
    pub const ACCEPTED: u8 = 0x10;
    pub const PENDING: u8 = 0x11;
    pub const AUTH_REQUIRED: u8 = 0x12;
    pub const USER_AUTH_REQUIRED: u8 = 0x13;
    pub const PING: u8 = 0x20;
    pub const PING_REPLY: u8 = 0x21;
    pub const RETRANSMIT_REQUEST: u8 = 0x80;
    pub const RETRANSMIT_ERROR: u8 = 0x81;
    pub const SESSION_RESET: u8 = 0x82;
    pub const SESSION_RESET_REPLY: u8 = 0x83;
    /// NAK as Zephyr, pymidi2 and Windows MIDI Services send it (their §5.5 table).
    pub const NAK: u8 = 0x8F;
    /// NAK as amidi2net sends it; read as a NAK too, never sent.
    pub const NAK_AMIDI2NET: u8 = 0x7F;
    pub const BYE: u8 = 0xF0;
    pub const BYE_REPLY: u8 = 0xF1;
    pub const UMP_DATA: u8 = 0xFF;
}

/// Invitation capabilities, byte 3 of an invitation (§6.4, table 11).
pub mod caps {
    pub const AUTH: u8 = 1 << 0;
    pub const USER_AUTH: u8 = 1 << 1;
}

/// Authentication state, byte 3 of an "authentication required" reply (§6.7, table 15).
pub mod auth_state {
    pub const FIRST_REQUEST: u8 = 0x00;
    pub const INCORRECT_DIGEST: u8 = 0x01;
    /// amidi2net's value for an unknown user name.
    pub const USER_NOT_FOUND: u8 = 0x02;
}

/// NAK reasons (§6.15, table 25).
pub mod nak_reason {
    pub const OTHER: u8 = 0x00;
    pub const NOT_SUPPORTED: u8 = 0x01;
    pub const NOT_EXPECTED: u8 = 0x02;
    pub const MALFORMED: u8 = 0x03;
    pub const BAD_PING_REPLY: u8 = 0x20;
}

/// Bye reasons.
pub mod bye_reason {
    pub const UNKNOWN: u8 = 0x00;
    pub const TERMINATED: u8 = 0x01;
    pub const POWER_DOWN: u8 = 0x02;
    pub const TOO_MANY_MISSING: u8 = 0x03;
    pub const TIMEOUT: u8 = 0x04;
    pub const NOT_ESTABLISHED: u8 = 0x05;
    pub const NO_PENDING_SESSION: u8 = 0x06;
    pub const PROTOCOL_ERROR: u8 = 0x07;
    pub const TOO_MANY_SESSIONS: u8 = 0x40;
    pub const AUTH_MISSING: u8 = 0x41;
    pub const NOT_ACCEPTED: u8 = 0x42;
    pub const AUTH_FAILED: u8 = 0x43;
    pub const USER_NOT_FOUND: u8 = 0x44;
    pub const NO_MATCHING_AUTH: u8 = 0x45;
    pub const INVITATION_CANCELLED: u8 = 0x80;
}

/// Retransmit error reasons (§7.2.4).
pub mod retransmit_error {
    pub const UNKNOWN: u8 = 0x00;
    pub const NO_DATA: u8 = 0x01;
}

/// Name and product instance id carried by invitations and their replies (§6.4, §6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Identity<'a> {
    pub name: &'a str,
    pub product_id: &'a str,
}

/// One command packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// §6.4; `caps` are the authentication methods the client can do.
    Invitation {
        caps: u8,
        identity: Identity<'a>,
    },
    /// §6.9: SHA-256 of nonce + shared secret.
    InvitationWithAuth {
        digest: [u8; DIGEST_LEN],
    },
    /// §6.10: SHA-256 of nonce + user name + password, then the user name.
    InvitationWithUserAuth {
        digest: [u8; DIGEST_LEN],
        user: &'a str,
    },
    Accepted(Identity<'a>),
    Pending(Identity<'a>),
    /// §6.7 (shared secret), and its user-authentication twin (`user: true`).
    AuthRequired {
        user: bool,
        state: u8,
        nonce: [u8; NONCE_LEN],
        identity: Identity<'a>,
    },
    Ping(u32),
    PingReply(u32),
    /// Resend from `seq` on, `count` UMP data commands (0: all up to the newest).
    RetransmitRequest {
        seq: u16,
        count: u16,
    },
    /// `seq` is the first one that cannot be sent.
    RetransmitError {
        seq: u16,
        reason: u8,
    },
    SessionReset,
    SessionResetReply,
    /// §6.15: `header` is the header of the command refused.
    Nak {
        reason: u8,
        header: [u8; HEADER_LEN],
        text: &'a str,
    },
    Bye {
        reason: u8,
        text: &'a str,
    },
    ByeReply,
    /// UMP words, big-endian on the wire, as received (a multiple of 4 bytes).
    UmpData {
        seq: u16,
        payload: &'a [u8],
    },
}

/// Why a command packet could not be read. `header` is its header (zeros if cut short), for
/// the NAK that answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandError {
    pub kind: CommandErrorKind,
    pub header: [u8; HEADER_LEN],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandErrorKind {
    /// Fewer bytes left than the header or its length field says.
    Truncated,
    /// A command code we do not know.
    Unsupported,
    /// Wrong payload length for the command, a string field past the payload, bad UTF-8.
    Malformed,
}

impl CommandError {
    /// The NAK reason that answers this error (§6.15).
    pub fn nak_reason(&self) -> u8 {
        match self.kind {
            CommandErrorKind::Unsupported => nak_reason::NOT_SUPPORTED,
            _ => nak_reason::MALFORMED,
        }
    }
}

/// Why a command cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The buffer is shorter than [`Command::buffer_len`].
    BufferTooSmall,
    /// The payload would exceed 255 words, or UMP data is not whole words.
    TooLong,
}

/// Checks the signature; the command packets follow it.
pub fn is_midi2(bytes: &[u8]) -> bool {
    bytes.starts_with(&SIGNATURE)
}

/// The command packets of a datagram, or `None` without the signature. The iterator stops after
/// the first error: past a bad length nothing can be trusted.
pub fn commands(bytes: &[u8]) -> Option<Commands<'_>> {
    is_midi2(bytes).then(|| Commands {
        rest: &bytes[SIGNATURE.len()..],
    })
}

pub struct Commands<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Commands<'a> {
    type Item = Result<Command<'a>, CommandError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = Command::parse(self.rest);
        match result {
            Ok((_, len)) => self.rest = &self.rest[len..],
            Err(_) => self.rest = &[],
        }
        Some(result.map(|(c, _)| c))
    }
}

/// Words needed by a string and its terminator; empty strings take none (as amidi2net writes).
fn text_words(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        s.len() / 4 + 1
    }
}

/// The text in `bytes` up to the first NUL.
fn read_text(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).ok()
}

fn write_text(buf: &mut [u8], s: &str) -> usize {
    let words = text_words(s);
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()..words * 4].fill(0);
    words * 4
}

fn read_identity(payload: &[u8], name_words: usize) -> Option<Identity<'_>> {
    let split = name_words.checked_mul(4).filter(|&n| n <= payload.len())?;
    Some(Identity {
        name: read_text(&payload[..split])?,
        product_id: read_text(&payload[split..])?,
    })
}

impl<'a> Command<'a> {
    /// Reads the first command packet of `bytes`; returns it and the bytes it took.
    pub fn parse(bytes: &'a [u8]) -> Result<(Command<'a>, usize), CommandError> {
        let mut header = [0u8; HEADER_LEN];
        let truncated = |header| CommandError {
            kind: CommandErrorKind::Truncated,
            header,
        };
        let head = bytes.get(..HEADER_LEN).ok_or(truncated(header))?;
        header.copy_from_slice(head);
        let [code, words, b2, b3] = header;
        let len = HEADER_LEN + usize::from(words) * 4;
        let payload = bytes.get(HEADER_LEN..len).ok_or(truncated(header))?;
        let malformed = CommandError {
            kind: CommandErrorKind::Malformed,
            header,
        };
        let exact = |n: usize| {
            if payload.len() == n * 4 {
                Ok(())
            } else {
                Err(malformed)
            }
        };
        let digest = |p: &[u8]| -> Result<[u8; DIGEST_LEN], CommandError> {
            p.get(..DIGEST_LEN)
                .and_then(|d| d.try_into().ok())
                .ok_or(malformed)
        };
        let word = |p: &[u8]| u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let command = match code {
            code::INVITATION | code::ACCEPTED | code::PENDING => {
                let identity = read_identity(payload, usize::from(b2)).ok_or(malformed)?;
                match code {
                    code::INVITATION => Command::Invitation { caps: b3, identity },
                    code::ACCEPTED => Command::Accepted(identity),
                    _ => Command::Pending(identity),
                }
            }
            code::INVITATION_WITH_AUTH => {
                exact(DIGEST_LEN / 4)?;
                Command::InvitationWithAuth {
                    digest: digest(payload)?,
                }
            }
            code::INVITATION_WITH_USER_AUTH => Command::InvitationWithUserAuth {
                digest: digest(payload)?,
                user: read_text(&payload[DIGEST_LEN..]).ok_or(malformed)?,
            },
            code::AUTH_REQUIRED | code::USER_AUTH_REQUIRED => {
                let nonce: [u8; NONCE_LEN] = payload
                    .get(..NONCE_LEN)
                    .and_then(|n| n.try_into().ok())
                    .ok_or(malformed)?;
                let identity =
                    read_identity(&payload[NONCE_LEN..], usize::from(b2)).ok_or(malformed)?;
                Command::AuthRequired {
                    user: code == code::USER_AUTH_REQUIRED,
                    state: b3,
                    nonce,
                    identity,
                }
            }
            code::PING | code::PING_REPLY => {
                exact(1)?;
                let id = word(payload);
                if code == code::PING {
                    Command::Ping(id)
                } else {
                    Command::PingReply(id)
                }
            }
            code::RETRANSMIT_REQUEST => {
                exact(1)?;
                Command::RetransmitRequest {
                    seq: u16::from_be_bytes([b2, b3]),
                    count: u16::from_be_bytes([payload[0], payload[1]]),
                }
            }
            code::RETRANSMIT_ERROR => {
                exact(1)?;
                Command::RetransmitError {
                    seq: u16::from_be_bytes([payload[0], payload[1]]),
                    reason: b2,
                }
            }
            code::SESSION_RESET => {
                exact(0)?;
                Command::SessionReset
            }
            code::SESSION_RESET_REPLY => {
                exact(0)?;
                Command::SessionResetReply
            }
            code::NAK | code::NAK_AMIDI2NET => {
                let nakked = payload.get(..HEADER_LEN).ok_or(malformed)?;
                Command::Nak {
                    reason: b2,
                    header: [nakked[0], nakked[1], nakked[2], nakked[3]],
                    text: read_text(&payload[HEADER_LEN..]).ok_or(malformed)?,
                }
            }
            code::BYE => Command::Bye {
                reason: b2,
                text: read_text(payload).ok_or(malformed)?,
            },
            code::BYE_REPLY => {
                exact(0)?;
                Command::ByeReply
            }
            code::UMP_DATA => Command::UmpData {
                seq: u16::from_be_bytes([b2, b3]),
                payload,
            },
            _ => {
                return Err(CommandError {
                    kind: CommandErrorKind::Unsupported,
                    header,
                })
            }
        };
        Ok((command, len))
    }

    fn code(&self) -> u8 {
        match self {
            Command::Invitation { .. } => code::INVITATION,
            Command::InvitationWithAuth { .. } => code::INVITATION_WITH_AUTH,
            Command::InvitationWithUserAuth { .. } => code::INVITATION_WITH_USER_AUTH,
            Command::Accepted(_) => code::ACCEPTED,
            Command::Pending(_) => code::PENDING,
            Command::AuthRequired { user: false, .. } => code::AUTH_REQUIRED,
            Command::AuthRequired { user: true, .. } => code::USER_AUTH_REQUIRED,
            Command::Ping(_) => code::PING,
            Command::PingReply(_) => code::PING_REPLY,
            Command::RetransmitRequest { .. } => code::RETRANSMIT_REQUEST,
            Command::RetransmitError { .. } => code::RETRANSMIT_ERROR,
            Command::SessionReset => code::SESSION_RESET,
            Command::SessionResetReply => code::SESSION_RESET_REPLY,
            Command::Nak { .. } => code::NAK,
            Command::Bye { .. } => code::BYE,
            Command::ByeReply => code::BYE_REPLY,
            Command::UmpData { .. } => code::UMP_DATA,
        }
    }

    fn payload_words(&self) -> usize {
        let identity = |i: &Identity<'_>| text_words(i.name) + text_words(i.product_id);
        match self {
            Command::Invitation { identity: i, .. }
            | Command::Accepted(i)
            | Command::Pending(i) => identity(i),
            Command::InvitationWithAuth { .. } => DIGEST_LEN / 4,
            Command::InvitationWithUserAuth { user, .. } => DIGEST_LEN / 4 + text_words(user),
            Command::AuthRequired { identity: i, .. } => NONCE_LEN / 4 + identity(i),
            Command::Ping(_)
            | Command::PingReply(_)
            | Command::RetransmitRequest { .. }
            | Command::RetransmitError { .. } => 1,
            Command::SessionReset | Command::SessionResetReply | Command::ByeReply => 0,
            Command::Nak { text, .. } => 1 + text_words(text),
            Command::Bye { text, .. } => text_words(text),
            Command::UmpData { payload, .. } => payload.len().div_ceil(4),
        }
    }

    /// Bytes this command takes on the wire.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_words() * 4
    }

    /// Writes the command packet at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let words = self.payload_words();
        if words > MAX_PAYLOAD_WORDS {
            return Err(EmitError::TooLong);
        }
        if let Command::UmpData { payload, .. } = self {
            if payload.len() % 4 != 0 {
                return Err(EmitError::TooLong);
            }
        }
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
        let (header, payload) = buf.split_at_mut(HEADER_LEN);
        let (b2, b3) = match *self {
            Command::Invitation { caps, identity } => (text_words(identity.name) as u8, caps),
            Command::Accepted(i) | Command::Pending(i) => (text_words(i.name) as u8, 0),
            Command::AuthRequired {
                state, identity, ..
            } => (text_words(identity.name) as u8, state),
            Command::RetransmitRequest { seq, .. } | Command::UmpData { seq, .. } => {
                let [hi, lo] = seq.to_be_bytes();
                (hi, lo)
            }
            Command::RetransmitError { reason, .. }
            | Command::Nak { reason, .. }
            | Command::Bye { reason, .. } => (reason, 0),
            _ => (0, 0),
        };
        header.copy_from_slice(&[self.code(), words as u8, b2, b3]);
        let write_identity = |p: &mut [u8], i: &Identity<'_>| {
            let n = write_text(p, i.name);
            write_text(&mut p[n..], i.product_id);
        };
        match *self {
            Command::Invitation { identity: i, .. }
            | Command::Accepted(i)
            | Command::Pending(i) => write_identity(payload, &i),
            Command::InvitationWithAuth { digest } => payload.copy_from_slice(&digest),
            Command::InvitationWithUserAuth { digest, user } => {
                payload[..DIGEST_LEN].copy_from_slice(&digest);
                write_text(&mut payload[DIGEST_LEN..], user);
            }
            Command::AuthRequired {
                nonce, identity, ..
            } => {
                payload[..NONCE_LEN].copy_from_slice(&nonce);
                write_identity(&mut payload[NONCE_LEN..], &identity);
            }
            Command::Ping(id) | Command::PingReply(id) => {
                payload.copy_from_slice(&id.to_be_bytes())
            }
            Command::RetransmitRequest { count, .. } => {
                payload[..2].copy_from_slice(&count.to_be_bytes());
                payload[2..].fill(0);
            }
            Command::RetransmitError { seq, .. } => {
                payload[..2].copy_from_slice(&seq.to_be_bytes());
                payload[2..].fill(0);
            }
            Command::Nak { header, text, .. } => {
                payload[..HEADER_LEN].copy_from_slice(&header);
                write_text(&mut payload[HEADER_LEN..], text);
            }
            Command::Bye { text, .. } => {
                write_text(payload, text);
            }
            Command::UmpData { payload: data, .. } => payload.copy_from_slice(data),
            Command::SessionReset | Command::SessionResetReply | Command::ByeReply => {}
        }
        Ok(len)
    }
}

/// Writes a UMP data command carrying `words` (host order) at the start of `buf`.
pub fn emit_ump_data(seq: u16, words: &[u32], buf: &mut [u8]) -> Result<usize, EmitError> {
    if words.len() > MAX_PAYLOAD_WORDS {
        return Err(EmitError::TooLong);
    }
    let len = HEADER_LEN + words.len() * 4;
    let buf = buf.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
    let [hi, lo] = seq.to_be_bytes();
    buf[..HEADER_LEN].copy_from_slice(&[code::UMP_DATA, words.len() as u8, hi, lo]);
    for (chunk, word) in buf[HEADER_LEN..].chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    Ok(len)
}

/// The UMP words of a UMP data payload, in host order.
pub fn ump_words(payload: &[u8]) -> impl Iterator<Item = u32> + '_ {
    payload
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// Builds a datagram command by command in a caller's buffer.
pub struct DatagramWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> DatagramWriter<'b> {
    /// Starts a datagram; `None` if `buf` cannot hold even the signature.
    pub fn new(buf: &'b mut [u8]) -> Option<Self> {
        buf.get_mut(..SIGNATURE.len())?.copy_from_slice(&SIGNATURE);
        Some(DatagramWriter {
            buf,
            len: SIGNATURE.len(),
        })
    }

    /// Appends a command; on error the datagram is unchanged.
    pub fn push(&mut self, command: &Command<'_>) -> Result<(), EmitError> {
        self.len += command.emit(&mut self.buf[self.len..])?;
        Ok(())
    }

    pub fn push_ump(&mut self, seq: u16, words: &[u32]) -> Result<(), EmitError> {
        self.len += emit_ump_data(seq, words, &mut self.buf[self.len..])?;
        Ok(())
    }

    /// Bytes still free.
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// True when no command was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == SIGNATURE.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn emitted(c: &Command<'_>) -> Vec<u8> {
        let mut buf = vec![0xAA; c.buffer_len()];
        assert_eq!(c.emit(&mut buf), Ok(buf.len()));
        buf
    }

    #[test]
    fn invitation_bytes() {
        let c = Command::Invitation {
            caps: caps::AUTH | caps::USER_AUTH,
            identity: Identity {
                name: "Synth",
                product_id: "ab12",
            },
        };
        let bytes = emitted(&c);
        assert_eq!(
            bytes,
            [
                0x01, 4, 2, 0x03, b'S', b'y', b'n', b't', b'h', 0, 0, 0, b'a', b'b', b'1', b'2', 0,
                0, 0, 0
            ]
        );
        assert_eq!(Command::parse(&bytes), Ok((c, 20)));
    }

    #[test]
    fn unterminated_text_that_fills_its_words_is_read_whole() {
        // Zephyr writes a 4-byte name in one word, without terminator.
        let bytes = [0x10, 1, 1, 0, b'a', b'b', b'c', b'd'];
        let (c, _) = Command::parse(&bytes).unwrap();
        assert_eq!(
            c,
            Command::Accepted(Identity {
                name: "abcd",
                product_id: ""
            })
        );
    }

    #[test]
    fn auth_required_bytes() {
        let nonce = *b"0123456789abcdef";
        let c = Command::AuthRequired {
            user: true,
            state: auth_state::FIRST_REQUEST,
            nonce,
            identity: Identity {
                name: "Host",
                product_id: "",
            },
        };
        let bytes = emitted(&c);
        assert_eq!(&bytes[..4], &[0x13, 6, 2, 0]);
        assert_eq!(&bytes[4..20], &nonce);
        assert_eq!(&bytes[20..28], b"Host\0\0\0\0");
        assert_eq!(Command::parse(&bytes).unwrap().0, c);
    }

    #[test]
    fn retransmit_and_ping_bytes() {
        let req = Command::RetransmitRequest {
            seq: 0x1234,
            count: 3,
        };
        assert_eq!(emitted(&req), [0x80, 1, 0x12, 0x34, 0, 3, 0, 0]);
        let err = Command::RetransmitError {
            seq: 0xBEEF,
            reason: retransmit_error::NO_DATA,
        };
        assert_eq!(emitted(&err), [0x81, 1, 1, 0, 0xBE, 0xEF, 0, 0]);
        assert_eq!(
            emitted(&Command::Ping(0x0102_0304)),
            [0x20, 1, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(emitted(&Command::SessionReset), [0x82, 0, 0, 0]);
        assert_eq!(emitted(&Command::ByeReply), [0xF1, 0, 0, 0]);
    }

    #[test]
    fn nak_from_either_code() {
        let c = Command::Nak {
            reason: nak_reason::NOT_EXPECTED,
            header: [0x10, 0, 0, 0],
            text: "",
        };
        let bytes = emitted(&c);
        assert_eq!(bytes, [0x8F, 1, 2, 0, 0x10, 0, 0, 0]);
        let mut amidi = bytes.clone();
        amidi[0] = 0x7F;
        assert_eq!(Command::parse(&amidi).unwrap().0, c);
    }

    #[test]
    fn ump_data_and_datagram() {
        let mut buf = [0u8; 64];
        let mut w = DatagramWriter::new(&mut buf).unwrap();
        w.push_ump(7, &[0x2090_3C64]).unwrap();
        w.push(&Command::Ping(9)).unwrap();
        let len = w.len();
        assert_eq!(
            &buf[..16],
            &[b'M', b'I', b'D', b'I', 0xFF, 1, 0, 7, 0x20, 0x90, 0x3C, 0x64, 0x20, 1, 0, 0]
        );
        let cmds: Vec<_> = commands(&buf[..len]).unwrap().collect();
        assert_eq!(cmds.len(), 2);
        let Ok(Command::UmpData { seq: 7, payload }) = cmds[0] else {
            panic!("{cmds:?}")
        };
        assert_eq!(ump_words(payload).collect::<Vec<_>>(), [0x2090_3C64]);
        assert_eq!(cmds[1], Ok(Command::Ping(9)));
        assert!(commands(b"MIDX").is_none());
        assert_eq!(commands(b"MIDI").unwrap().count(), 0);
    }

    #[test]
    fn errors_carry_the_header_for_the_nak() {
        let unknown = [0x55, 0, 1, 2];
        assert_eq!(
            Command::parse(&unknown),
            Err(CommandError {
                kind: CommandErrorKind::Unsupported,
                header: unknown
            })
        );
        let bad_ping = [0x20, 0, 0, 0];
        let err = Command::parse(&bad_ping).unwrap_err();
        assert_eq!(err.kind, CommandErrorKind::Malformed);
        assert_eq!(err.nak_reason(), nak_reason::MALFORMED);
        // Name length past the payload.
        let err = Command::parse(&[0x01, 1, 2, 0, b'a', 0, 0, 0]).unwrap_err();
        assert_eq!(err.kind, CommandErrorKind::Malformed);
        // Bad UTF-8.
        let err = Command::parse(&[0xF0, 1, 1, 0, 0xFF, 0xFE, 0, 0]).unwrap_err();
        assert_eq!(err.kind, CommandErrorKind::Malformed);
        // The iterator stops at the first error.
        let mut d = b"MIDI".to_vec();
        d.extend_from_slice(&[0x55, 0, 0, 0, 0x20, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(commands(&d).unwrap().count(), 1);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let samples = [
            Command::Invitation {
                caps: 1,
                identity: Identity {
                    name: "Name",
                    product_id: "P",
                },
            },
            Command::InvitationWithAuth { digest: [7; 32] },
            Command::InvitationWithUserAuth {
                digest: [7; 32],
                user: "me",
            },
            Command::AuthRequired {
                user: false,
                state: 0,
                nonce: [1; 16],
                identity: Identity::default(),
            },
            Command::PingReply(1),
            Command::RetransmitRequest { seq: 1, count: 0 },
            Command::RetransmitError { seq: 1, reason: 1 },
            Command::Nak {
                reason: 1,
                header: [1, 2, 3, 4],
                text: "why",
            },
            Command::Bye {
                reason: 1,
                text: "bye",
            },
            Command::UmpData {
                seq: 3,
                payload: &[0x10, 0xF8, 0, 0],
            },
        ];
        for c in samples {
            let bytes = emitted(&c);
            assert_eq!(Command::parse(&bytes), Ok((c, bytes.len())));
            for cut in 0..bytes.len() {
                let err = Command::parse(&bytes[..cut]).unwrap_err();
                assert_eq!(err.kind, CommandErrorKind::Truncated, "{c:?} cut at {cut}");
            }
            let mut small = vec![0; bytes.len() - 1];
            assert_eq!(c.emit(&mut small), Err(EmitError::BufferTooSmall));
        }
    }

    #[test]
    fn too_long_is_refused() {
        let long = "x".repeat(1100);
        let c = Command::Bye {
            reason: 0,
            text: &long,
        };
        assert_eq!(c.emit(&mut [0; 2000]), Err(EmitError::TooLong));
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 é]{0,40}"
    }

    fn command() -> impl Strategy<Value = (u8, u8, u16, u16, String, String, [u8; 32], u32)> {
        (
            0u8..17,
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            text(),
            text(),
            any::<[u8; 32]>(),
            any::<u32>(),
        )
    }

    proptest! {
        #[test]
        fn round_trip((kind, b, s1, s2, t1, t2, digest, w) in command()) {
            let identity = Identity { name: &t1, product_id: &t2 };
            let nonce: [u8; 16] = digest[..16].try_into().unwrap();
            let words = [w, w ^ 1];
            let mut payload = Vec::new();
            for word in words { payload.extend_from_slice(&word.to_be_bytes()) }
            let c = match kind {
                0 => Command::Invitation { caps: b, identity },
                1 => Command::InvitationWithAuth { digest },
                2 => Command::InvitationWithUserAuth { digest, user: &t1 },
                3 => Command::Accepted(identity),
                4 => Command::Pending(identity),
                5 => Command::AuthRequired { user: b & 1 == 1, state: b, nonce, identity },
                6 => Command::Ping(w),
                7 => Command::PingReply(w),
                8 => Command::RetransmitRequest { seq: s1, count: s2 },
                9 => Command::RetransmitError { seq: s1, reason: b },
                10 => Command::SessionReset,
                11 => Command::SessionResetReply,
                12 => Command::Nak { reason: b, header: nonce[..4].try_into().unwrap(), text: &t1 },
                13 => Command::Bye { reason: b, text: &t2 },
                14 => Command::ByeReply,
                _ => Command::UmpData { seq: s1, payload: &payload },
            };
            let mut buf = vec![0; c.buffer_len()];
            prop_assert_eq!(c.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(Command::parse(&buf), Ok((c, buf.len())));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut d = SIGNATURE.to_vec();
            d.extend_from_slice(&bytes);
            for c in commands(&d).unwrap().flatten() {
                let mut buf = vec![0; c.buffer_len()];
                prop_assert!(c.emit(&mut buf).is_ok());
            }
        }
    }
}
