//! The recovery journal (RFC 6295 §4-6, Appendices A and B; RFC 4696 for sender and receiver
//! behaviour).
//!
//! Every RTP-MIDI packet may end with a journal describing the MIDI state changed since a
//! checkpoint packet. A receiver that sees a gap in sequence numbers compares the next
//! journal with what it delivered and issues the commands that bring it back in line: no hung
//! note, no wrong controller.
//!
//! - [`wire`]: the bit layouts, parse (checked once, then infallible views) and emit helpers.
//! - [`JournalSender`]: records what was sent, writes journals within a size budget, trims
//!   history when the receiver confirms (RS).
//! - [`JournalReceiver`]: tracks what was delivered, repairs after a loss.
//! - [`GuardTimer`]: when to send a journal-only packet after the stream goes quiet.
//! - [`MidiState`]: the state model both sides share.
//!
//! How a session uses them, per packet:
//! - sending packet `seq`: [`JournalSender::record`] each command it carries, then
//!   `let n = tx.emit(seq, &mut buf[used..mtu])` and set the J flag when `n > 0`; then
//!   [`GuardTimer::on_sent`]`(now, true)`. On an RS: [`JournalSender::confirm_rs`]; when
//!   [`JournalSender::has_pending`] turns false, [`GuardTimer::stop`]. When
//!   [`GuardTimer::next_guard`] is due: a packet with no commands and `emit`'s journal, then
//!   `on_sent(now, false)` (or `stop()` if `emit` gave nothing). With a
//!   [`GuardTimer::bounded`] timer, tell it of each RS with [`GuardTimer::on_confirmed`].
//! - receiving packet `seq` after `lost` missing ones: [`JournalReceiver::recover`] with the
//!   journal (its repairs are delivered first; on an error the packet's commands are still
//!   delivered), then each command delivered goes through [`JournalReceiver::observe`]; RS
//!   names the newest `seq` processed.

mod guard;
mod receiver;
mod sender;
mod state;
pub mod wire;

pub use guard::{GuardTimer, GUARD_FIRST, GUARD_MAX};
pub use receiver::JournalReceiver;
pub use sender::{JournalSender, SYSEX_JOURNAL_CAP};
pub use state::{ChannelState, MidiState, Note, ParamId, Sequencer, Stamped, SystemState};

/// Why a journal could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// Shorter than a header or a length field says.
    Truncated,
    /// A LENGTH field disagrees with the chapters it covers.
    BadLength,
    /// Chapter N's LOW and HIGH form an illegal pair (RFC 6295 A.6).
    BadOffbits,
    /// Emitting: the journal does not fit in the room given.
    NoRoom,
}

impl core::fmt::Display for JournalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            JournalError::Truncated => "recovery journal truncated",
            JournalError::BadLength => "recovery journal length field inconsistent",
            JournalError::BadOffbits => "recovery journal chapter N LOW/HIGH illegal",
            JournalError::NoRoom => "recovery journal does not fit",
        })
    }
}

#[cfg(test)]
mod tests;
