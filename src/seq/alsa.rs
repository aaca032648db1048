//! The real sequencer: the one file that calls libasound (through the `alsa` crate).
//!
//! Events become MIDI bytes and back through `snd_midi_event` ([`MidiEvent`]), with running
//! status off so every message carries its status byte. Its decoder already writes CONTROL14,
//! NONREGPARAM and REGPARAM events as the control changes they stand for (alsa-lib
//! `seq_midi_event.c`, `extra_decode_ctrl14`/`extra_decode_xrpn`). The bytes of each event,
//! SysEx chunks included, go through one [`StreamParser`] per port and sender, which splits
//! them into messages and joins SysEx; long SysEx is split into chunks on the way out. A NOTE
//! event (note with a duration) never reaches us: the kernel accepts it only on a queue, which
//! delivers a NOTEON and later a NOTEOFF instead (seq_clientmgr.c, `snd_seq_dispatch_event`).
//!
//! alsa-lib reads input from the kernel in bulk (up to 500 events) into its own buffer, and
//! events left there do not make the sequencer's fd readable again: a caller that stops
//! reading before `recv` says drained (a batch limit) would strand them until the next event
//! comes. So `fds` has a second fd, a [`ReadyFd`], readable while they wait.
//!
//! SysEx leaves paced: receivers read from small kernel FIFOs (aseqdump keeps the default of
//! 200 cells, about 18 chunks of 256 bytes), and what overflows them is lost without a word to
//! the sender (measured in tests/vm: 10 KiB sent at once reached aseqdump half; at 100 KB/s
//! one run in four lost chunks with four VMs on two cores). Chunks are scheduled on our own
//! queue at [`DEFAULT_SYSEX_RATE`] or what [`AlsaSequencer::set_sysex_rate`] sets, and the
//! messages that follow wait their turn behind them so order holds; realtime messages, which
//! MIDI lets into the middle of a SysEx, are never held back.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::time::Duration;

use ::alsa::poll::Descriptors;
use ::alsa::seq::{
    ClientIter, Connect, Event, EventType, MidiEvent, PortCap, PortIter, PortSubscribe, PortType,
    Seq,
};
use protocol::midi::{self, MidiMessage};
use protocol::stream::StreamParser;

use super::ready::ReadyFd;
use super::{Direction, PortCaps, PortId, PortInfo, SeqAddr, SeqInput, Sequencer, Subscription};

/// The device node libasound opens for the sequencer.
const SEQ_DEVICE: &str = "/dev/snd/seq";
/// Events in the kernel pools for our client, the kernel's maximum (SNDRV_SEQ_MAX_EVENTS and
/// SNDRV_SEQ_MAX_CLIENT_EVENTS): room for bursts such as a long SysEx.
const POOL_EVENTS: u32 = 2000;
/// Events that wait for room in the sequencer before `send` refuses more.
const BACKLOG_LIMIT: usize = 4096;
/// The longest decoded event: an NRPN or RPN is four control changes.
const DECODE_MAX: usize = 12;
/// The kernel's System client and its port that announces clients and ports.
const SYSTEM_CLIENT: u8 = 0;
const ANNOUNCE_PORT: u8 = 1;
/// SysEx bytes per sequencer event on the way out. Each event takes 1 + len/28 cells of the
/// client's kernel pool; 256 bytes keeps many events in flight and is what kernel drivers use.
const SYSEX_CHUNK: usize = 256;
/// SysEx output rate in bytes a second: ten times a MIDI cable's (3125), 100 KiB in 3.2 s.
pub const DEFAULT_SYSEX_RATE: u32 = 32_000;

/// How an outgoing event is ordered and paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Clock, start, stop...: at once, even past waiting SysEx.
    Realtime,
    /// After everything sent before it.
    Ordered,
    /// Ordered, and books output time for its bytes.
    SysEx,
}

/// An event that found no room in the sequencer yet.
struct Pending {
    ev: Event<'static>,
    kind: Kind,
    /// Queue time to deliver it at (`send_at`); `None` for at once.
    at: Option<Duration>,
}

pub struct AlsaSequencer {
    seq: Seq,
    client: u8,
    encoder: MidiEvent,
    decoder: MidiEvent,
    /// Input per (our port, sender): a SysEx may come in chunks, between other senders' events.
    parsers: HashMap<(PortId, SeqAddr), StreamParser>,
    /// Input read and not yet returned by `recv`: the messages after the first of an event
    /// that stands for several, the ports `watch_ports` found.
    queued: VecDeque<SeqInput>,
    /// Readable while input waits in `queued` or in alsa-lib's buffer.
    ready: ReadyFd,
    backlog: VecDeque<Pending>,
    /// Our queue, running, on which paced events are scheduled.
    queue: i32,
    /// Queue time until which SysEx output is booked.
    booked: Option<Duration>,
    /// SysEx bytes a second.
    sysex_rate: u32,
    /// With `watch_ports`: the port System:Announce talks to.
    announce: Option<i32>,
    /// The latest queue time `send_at` used per port and destination: later calls never go
    /// before it (a delay measured from a slightly later "now" must not reorder them).
    timed_last: HashMap<(PortId, Option<SeqAddr>), Duration>,
}

impl AlsaSequencer {
    /// Opens the sequencer as a client named `client_name`, non-blocking.
    pub fn open(client_name: &str) -> io::Result<Self> {
        let name = c_string(client_name)?;
        let seq = Seq::open(None, None, true).map_err(|e| {
            let hint = if Path::new(SEQ_DEVICE).exists() {
                String::new()
            } else {
                format!("; {SEQ_DEVICE} does not exist: is the snd-seq kernel module loaded (modprobe snd-seq)?")
            };
            io::Error::new(
                errno_kind(e),
                format!("cannot open the ALSA sequencer {SEQ_DEVICE}: {e}{hint}"),
            )
        })?;
        seq.set_client_name(&name).map_err(io_error)?;
        seq.set_client_pool_output(POOL_EVENTS).map_err(io_error)?;
        seq.set_client_pool_input(POOL_EVENTS).map_err(io_error)?;
        let client = seq.client_id().map_err(io_error)?;
        let queue = seq.alloc_queue().map_err(io_error)?;
        seq.control_queue(queue, EventType::Start, 0, None)
            .map_err(io_error)?;
        seq.drain_output().map_err(io_error)?;
        let (encoder, decoder) = coders()?;
        Ok(AlsaSequencer {
            seq,
            client: u8::try_from(client).map_err(|_| invalid("client id out of range"))?,
            encoder,
            decoder,
            parsers: HashMap::new(),
            queued: VecDeque::new(),
            ready: ReadyFd::new()?,
            backlog: VecDeque::new(),
            queue,
            booked: None,
            sysex_rate: DEFAULT_SYSEX_RATE,
            announce: None,
            timed_last: HashMap::new(),
        })
    }

    /// Sets the SysEx output rate in bytes a second (at least 1): 3125 suits a MIDI cable.
    pub fn set_sysex_rate(&mut self, bytes_per_sec: u32) {
        self.sysex_rate = bytes_per_sec.max(1);
    }

    /// Sends `ev` from `port` to its subscribers (or only to `to`), or parks it behind what
    /// already waits.
    fn output(
        &mut self,
        port: PortId,
        to: Option<SeqAddr>,
        mut ev: Event<'_>,
        kind: Kind,
        at: Option<Duration>,
    ) -> io::Result<()> {
        ev.set_source(i32::from(port.0));
        match to {
            Some(dest) => ev.set_dest(::alsa::seq::Addr {
                client: i32::from(dest.client),
                port: i32::from(dest.port),
            }),
            None => ev.set_subs(),
        }
        let pace = (self.queue, self.sysex_rate);
        if (self.backlog.is_empty() || kind == Kind::Realtime)
            && try_output(&self.seq, pace, &mut self.booked, &mut ev, kind, at)?
        {
            return Ok(());
        }
        self.backlog.push_back(Pending {
            ev: ev.into_owned(),
            kind,
            at,
        });
        Ok(())
    }

    /// Sends `message` at once (`at` = `None`) or at queue time `at`.
    fn send_timed(
        &mut self,
        port: PortId,
        to: Option<SeqAddr>,
        message: &MidiMessage,
        at: Option<Duration>,
    ) -> io::Result<()> {
        if self.backlog.len() >= BACKLOG_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "sequencer output full",
            ));
        }
        match message {
            MidiMessage::Short(short) => {
                let kind = if midi::is_realtime(short.status()) {
                    Kind::Realtime
                } else {
                    Kind::Ordered
                };
                if let Some(ev) = encode(&mut self.encoder, short.as_bytes()) {
                    self.output(port, to, ev, kind, at)?;
                }
            }
            MidiMessage::SysEx(sysex) => {
                for chunk in sysex.chunks(SYSEX_CHUNK) {
                    self.output(
                        port,
                        to,
                        Event::new_ext(EventType::Sysex, chunk),
                        Kind::SysEx,
                        at,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The next input, `None` once the kernel has no more.
    fn next_input(&mut self) -> io::Result<Option<SeqInput>> {
        loop {
            if let Some(input) = self.queued.pop_front() {
                return Ok(Some(input));
            }
            let mut input = self.seq.input();
            let mut ev = match input.event_input() {
                Ok(ev) => ev,
                Err(e) if e.errno() == libc::EAGAIN => return Ok(None),
                Err(e) if e.errno() == libc::ENOSPC => {
                    self.parsers.clear();
                    return Ok(Some(SeqInput::Overrun));
                }
                Err(e) => return Err(io_error(e)),
            };
            let Ok(port) = u8::try_from(ev.get_dest().port).map(PortId) else {
                continue;
            };
            let Some(source) = addr(ev.get_source()) else {
                continue;
            };
            if Some(i32::from(port.0)) == self.announce {
                // Broadcasts: starts and exits of ports; subscriptions concerning us come to
                // the ports concerned as well, so the broadcast copies are skipped.
                let started = match ev.get_type() {
                    EventType::PortStart => true,
                    EventType::PortExit => false,
                    _ => continue,
                };
                let Some(a) = ev.get_data::<::alsa::seq::Addr>() else {
                    continue;
                };
                drop(input);
                let found = if started {
                    self.port_info(a).map(SeqInput::PortStarted)
                } else {
                    addr(a)
                        .filter(|p| p.client != self.client)
                        .map(SeqInput::PortExited)
                };
                match found {
                    Some(found) => return Ok(Some(found)),
                    None => continue,
                }
            }
            let mut buf = [0u8; DECODE_MAX];
            let bytes = match ev.get_type() {
                EventType::PortSubscribed | EventType::PortUnsubscribed => {
                    let subscribed = ev.get_type() == EventType::PortSubscribed;
                    let Some(connect) = ev.get_data::<Connect>() else {
                        continue;
                    };
                    drop(input);
                    if let Some(sub) = self.subscription(connect) {
                        return Ok(Some(if subscribed {
                            SeqInput::Subscribed(sub)
                        } else {
                            SeqInput::Unsubscribed(sub)
                        }));
                    }
                    continue;
                }
                EventType::Sysex => ev.get_ext().unwrap_or_default(),
                _ => decode(&self.decoder, &mut ev, &mut buf),
            };
            let queued = &mut self.queued;
            self.parsers
                .entry((port, source))
                .or_default()
                .feed(bytes, |message| {
                    queued.push_back(SeqInput::Midi {
                        port,
                        source,
                        message,
                    })
                });
        }
    }

    /// Makes [`ReadyFd`] tell whether input waits where the kernel's fd does not see it.
    fn update_ready(&mut self) {
        let buffered = self.seq.input().event_input_pending(false).unwrap_or(0);
        self.ready.set(buffered > 0 || !self.queued.is_empty());
    }

    /// Another client's port as `PortStarted` reports it; `None` for ours, the System
    /// client's and ports that went meanwhile.
    fn port_info(&self, a: ::alsa::seq::Addr) -> Option<PortInfo> {
        let addr = addr(a)?;
        if addr.client == SYSTEM_CLIENT || addr.client == self.client {
            return None;
        }
        let port = self.seq.get_any_port_info(a).ok()?;
        let client = self.seq.get_any_client_info(a.client).ok()?;
        let caps = port.get_capability();
        Some(PortInfo {
            addr,
            client_name: client.get_name().ok()?.to_owned(),
            port_name: port.get_name().ok()?.to_owned(),
            hardware: port.get_type().contains(PortType::HARDWARE),
            readable: caps.contains(PortCap::READ | PortCap::SUBS_READ),
            writable: caps.contains(PortCap::WRITE | PortCap::SUBS_WRITE),
        })
    }

    fn subscription(&self, connect: Connect) -> Option<Subscription> {
        let (port, peer, direction) = if connect.sender.client == i32::from(self.client) {
            (connect.sender.port, connect.dest, Direction::ToPeer)
        } else if connect.dest.client == i32::from(self.client) {
            (connect.dest.port, connect.sender, Direction::FromPeer)
        } else {
            return None;
        };
        let peer = addr(peer)?;
        let peer_client_name = self
            .seq
            .get_any_client_info(i32::from(peer.client))
            .ok()
            .and_then(|info| info.get_name().ok().map(str::to_owned));
        let peer_port_name = self
            .seq
            .get_any_port_info(::alsa::seq::Addr {
                client: i32::from(peer.client),
                port: i32::from(peer.port),
            })
            .ok()
            .and_then(|info| info.get_name().ok().map(str::to_owned));
        Some(Subscription {
            port: PortId(u8::try_from(port).ok()?),
            peer,
            direction,
            peer_client_name,
            peer_port_name,
        })
    }
}

impl Sequencer for AlsaSequencer {
    fn fds(&self) -> io::Result<Vec<RawFd>> {
        let fds = (&self.seq, Some(::alsa::Direction::Capture))
            .get()
            .map_err(io_error)?;
        Ok(fds.iter().map(|p| p.fd).chain([self.ready.fd()]).collect())
    }

    fn create_port(&mut self, name: &str, caps: PortCaps) -> io::Result<PortId> {
        let name = c_string(name)?;
        let mut cap = PortCap::empty();
        if caps.read {
            cap |= PortCap::READ | PortCap::SUBS_READ;
        }
        if caps.write {
            cap |= PortCap::WRITE | PortCap::SUBS_WRITE;
        }
        let port = self
            .seq
            .create_simple_port(&name, cap, PortType::MIDI_GENERIC | PortType::APPLICATION)
            .map_err(io_error)?;
        u8::try_from(port)
            .map(PortId)
            .map_err(|_| invalid("port number out of range"))
    }

    fn delete_port(&mut self, port: PortId) -> io::Result<()> {
        self.parsers.retain(|&(p, _), _| p != port);
        self.timed_last.retain(|(p, _), _| *p != port);
        self.backlog
            .retain(|p| p.ev.get_source().port != i32::from(port.0));
        self.seq.delete_port(i32::from(port.0)).map_err(io_error)
    }

    fn recv(&mut self) -> io::Result<Option<SeqInput>> {
        let input = self.next_input();
        self.update_ready();
        input
    }

    fn send(&mut self, port: PortId, to: Option<SeqAddr>, message: &MidiMessage) -> io::Result<()> {
        self.send_timed(port, to, message, None)
    }

    fn send_at(
        &mut self,
        port: PortId,
        to: Option<SeqAddr>,
        message: &MidiMessage,
        after: Duration,
    ) -> io::Result<()> {
        let now = queue_time(&self.seq, self.queue)?;
        let last = self.timed_last.entry((port, to)).or_default();
        let at = (now + after).max(*last);
        *last = at;
        self.send_timed(port, to, message, Some(at))
    }

    fn watch_ports(&mut self) -> io::Result<()> {
        if self.announce.is_some() {
            return Ok(());
        }
        // Our own port for the broadcasts, hidden from others (no SUBS caps: only we may
        // subscribe it).
        let port = self
            .seq
            .create_simple_port(c"announcements", PortCap::WRITE, PortType::APPLICATION)
            .map_err(io_error)?;
        self.announce = Some(port);
        self.connect(
            SeqAddr {
                client: SYSTEM_CLIENT,
                port: ANNOUNCE_PORT,
            },
            SeqAddr {
                client: self.client,
                port: u8::try_from(port).map_err(|_| invalid("port number out of range"))?,
            },
        )?;
        // Ports that started before we listened, returned by `recv` first.
        for client in ClientIter::new(&self.seq) {
            for port in PortIter::new(&self.seq, client.get_client()) {
                if let Some(info) = self.port_info(port.addr()) {
                    self.queued.push_back(SeqInput::PortStarted(info));
                }
            }
        }
        self.update_ready();
        Ok(())
    }

    fn connect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
        let a = |s: SeqAddr| ::alsa::seq::Addr {
            client: i32::from(s.client),
            port: i32::from(s.port),
        };
        let subs = PortSubscribe::empty().map_err(io_error)?;
        subs.set_sender(a(from));
        subs.set_dest(a(to));
        self.seq.subscribe_port(&subs).map_err(io_error)
    }

    fn disconnect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
        let a = |s: SeqAddr| ::alsa::seq::Addr {
            client: i32::from(s.client),
            port: i32::from(s.port),
        };
        self.seq.unsubscribe_port(a(from), a(to)).map_err(io_error)
    }

    fn describe_port(&self, addr: SeqAddr) -> Option<PortInfo> {
        self.port_info(::alsa::seq::Addr {
            client: i32::from(addr.client),
            port: i32::from(addr.port),
        })
    }

    fn client(&self) -> u8 {
        self.client
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(p) = self.backlog.front_mut() {
            let pace = (self.queue, self.sysex_rate);
            let sent = try_output(&self.seq, pace, &mut self.booked, &mut p.ev, p.kind, p.at);
            if sent.as_ref().is_ok_and(|sent| !sent) {
                return Ok(());
            }
            // Sent, or refused for good: either way it leaves the backlog.
            self.backlog.pop_front();
            sent?;
        }
        Ok(())
    }

    fn backlog(&self) -> usize {
        self.backlog.len()
    }
}

/// The byte coders, running status off on the way out of ALSA.
fn coders() -> io::Result<(MidiEvent, MidiEvent)> {
    // The encoder only sees non-SysEx messages: three bytes at most.
    let encoder = MidiEvent::new(16).map_err(io_error)?;
    let decoder = MidiEvent::new(0).map_err(io_error)?;
    decoder.enable_running_status(false);
    Ok((encoder, decoder))
}

/// One message (no SysEx) as an event, or `None` for bytes ALSA has no event for.
fn encode(encoder: &mut MidiEvent, message: &[u8]) -> Option<Event<'static>> {
    // A message cut short earlier must not leave its bytes in the encoder.
    encoder.reset_encode();
    match encoder.encode(message) {
        // F4, F5, F9 and FD come out as events of type NONE.
        Ok((_, Some(ev))) if ev.get_type() != EventType::None => Some(ev.into_owned()),
        _ => None,
    }
}

/// A non-SysEx event as MIDI bytes in `buf`; none for events that are no MIDI (queue control,
/// announcements, NOTE).
fn decode<'b>(decoder: &MidiEvent, ev: &mut Event, buf: &'b mut [u8; DECODE_MAX]) -> &'b [u8] {
    let n = decoder.decode(buf, ev).unwrap_or(0);
    buf.get(..n).unwrap_or_default()
}

/// Hands `ev` to the kernel, directly or scheduled on `queue`: at `at` when given, and
/// non-realtime events behind booked SysEx output (booking `rate` bytes a second for SysEx);
/// `false` when the sequencer has no room (EAGAIN), in which case nothing changed.
fn try_output(
    seq: &Seq,
    (queue, rate): (i32, u32),
    booked: &mut Option<Duration>,
    ev: &mut Event,
    kind: Kind,
    at: Option<Duration>,
) -> io::Result<bool> {
    let mut when = None;
    let mut next_booked = *booked;
    if at.is_some() || (kind != Kind::Realtime && (booked.is_some() || kind == Kind::SysEx)) {
        let now = queue_time(seq, queue)?;
        // Option's order puts None first: the later of the two times, if any.
        when = at.filter(|&t| t > now);
        if kind != Kind::Realtime {
            let busy_until = booked.filter(|&t| t > now);
            when = when.max(busy_until);
            next_booked = busy_until;
        }
        if kind == Kind::SysEx {
            let len = ev.get_ext().map_or(0, <[u8]>::len) as u64;
            let busy = Duration::from_micros(len * 1_000_000 / u64::from(rate));
            next_booked = Some(when.unwrap_or(now) + busy);
        }
    }
    match when {
        Some(t) => ev.schedule_real(queue, false, t),
        None => ev.set_direct(),
    }
    match seq.event_output_direct(ev) {
        Ok(_) => {
            *booked = next_booked;
            Ok(true)
        }
        Err(e) if e.errno() == libc::EAGAIN => Ok(false),
        Err(e) => Err(io_error(e)),
    }
}

/// The real time of our queue, which runs from `open`.
fn queue_time(seq: &Seq, queue: i32) -> io::Result<Duration> {
    Ok(seq
        .get_queue_status(queue)
        .map_err(io_error)?
        .get_real_time())
}

fn addr(a: ::alsa::seq::Addr) -> Option<SeqAddr> {
    Some(SeqAddr {
        client: u8::try_from(a.client).ok()?,
        port: u8::try_from(a.port).ok()?,
    })
}

fn c_string(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| invalid("name contains a NUL byte"))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn errno_kind(e: ::alsa::Error) -> io::ErrorKind {
    io::Error::from_raw_os_error(e.errno()).kind()
}

fn io_error(e: ::alsa::Error) -> io::Error {
    io::Error::new(errno_kind(e), e)
}

#[cfg(test)]
mod tests {
    //! The byte conversions need libasound but no kernel sequencer; the tests marked
    //! `ignore` need one and run in the VM (tests/vm/seq_probe.sh).
    use super::*;
    use ::alsa::seq::{Addr, EvCtrl, EvNote};

    #[test]
    fn open_names_the_device_and_module_when_there_is_no_sequencer() {
        match AlsaSequencer::open("rtpmidid-test") {
            Ok(_) => assert!(Path::new(SEQ_DEVICE).exists()),
            Err(e) => {
                assert!(!Path::new(SEQ_DEVICE).exists(), "{e}");
                let msg = e.to_string();
                assert!(
                    msg.contains("/dev/snd/seq") && msg.contains("snd-seq"),
                    "{msg}"
                );
                assert_eq!(e.kind(), io::ErrorKind::NotFound);
            }
        }
    }

    #[test]
    #[ignore = "needs a kernel sequencer: tests/vm/seq_probe.sh runs it"]
    fn kernel_events_arrive_as_midi_messages_with_notices() {
        let mut rx = AlsaSequencer::open("rx").unwrap();
        let port = rx.create_port("in", PortCaps::DUPLEX).unwrap();
        let tx = Seq::open(None, None, false).unwrap();
        tx.set_client_name(c"tx").unwrap();
        let caps = PortCap::READ | PortCap::SUBS_READ;
        let tx_port = tx
            .create_simple_port(c"out", caps, PortType::MIDI_GENERIC)
            .unwrap();
        let tx_addr = Addr {
            client: tx.client_id().unwrap(),
            port: tx_port,
        };
        let subs = PortSubscribe::empty().unwrap();
        subs.set_sender(tx_addr);
        subs.set_dest(Addr {
            client: i32::from(rx.client()),
            port: i32::from(port.0),
        });
        tx.subscribe_port(&subs).unwrap();

        let send = |mut ev: Event| {
            ev.set_source(tx_port);
            ev.set_subs();
            ev.set_direct();
            tx.event_output_direct(&mut ev).unwrap();
        };
        let ctrl = |channel, param, value| EvCtrl {
            channel,
            param,
            value,
        };
        send(Event::new(EventType::Control14, &ctrl(2, 7, 0x1234)));
        send(Event::new(EventType::Nonregparam, &ctrl(1, 0x0123, 0x0456)));
        send(Event::new(EventType::Regparam, &ctrl(15, 0, 2 << 7)));
        let note = EvNote {
            channel: 0,
            note: 60,
            velocity: 100,
            off_velocity: 0,
            duration: 100,
        };
        send(Event::new(EventType::Noteon, &note));
        // A SysEx in three chunks, as a rawmidi bridge sends a long one.
        for chunk in [&[0xF0, 1, 2][..], &[3, 4], &[5, 0xF7]] {
            send(Event::new_ext(EventType::Sysex, chunk));
        }

        let mut got = Vec::new();
        while let Some(input) = rx.recv().unwrap() {
            got.push(input);
        }
        let source = SeqAddr {
            client: u8::try_from(tx_addr.client).unwrap(),
            port: u8::try_from(tx_addr.port).unwrap(),
        };
        let midi = |bytes: &[u8]| SeqInput::Midi {
            port,
            source,
            message: message(bytes),
        };
        let want = [
            SeqInput::Subscribed(Subscription {
                port,
                peer: source,
                direction: Direction::FromPeer,
                peer_client_name: Some("tx".into()),
                peer_port_name: Some("out".into()),
            }),
            midi(&[0xB2, 7, 0x24]),
            midi(&[0xB2, 39, 0x34]),
            midi(&[0xB1, 99, 0x02]),
            midi(&[0xB1, 98, 0x23]),
            midi(&[0xB1, 6, 0x08]),
            midi(&[0xB1, 38, 0x56]),
            midi(&[0xBF, 101, 0]),
            midi(&[0xBF, 100, 0]),
            midi(&[0xBF, 6, 2]),
            midi(&[0xBF, 38, 0]),
            midi(&[0x90, 60, 100]),
            midi(&[0xF0, 1, 2, 3, 4, 5, 0xF7]),
        ];
        assert_eq!(got, want);

        // A NOTE goes through a queue, which sends its note-off `duration` ms later.
        let queue = tx.alloc_queue().unwrap();
        tx.control_queue(queue, EventType::Start, 0, None).unwrap();
        tx.drain_output().unwrap();
        let mut ev = Event::new(
            EventType::Note,
            &EvNote {
                duration: 5,
                ..note
            },
        );
        ev.set_source(tx_port);
        ev.set_subs();
        ev.schedule_real(queue, true, Duration::ZERO);
        tx.event_output_direct(&mut ev).unwrap();
        let fd = rx.fds().unwrap()[0];
        let mut got = Vec::new();
        while got.len() < 2 {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; a 2 s bound turns a lost event into a failure.
            assert_eq!(
                unsafe { libc::poll(&mut p, 1, 2000) },
                1,
                "got only {got:?}"
            );
            while let Some(input) = rx.recv().unwrap() {
                got.push(input);
            }
        }
        assert_eq!(got, [midi(&[0x90, 60, 100]), midi(&[0x80, 60, 0])]);
    }

    #[test]
    #[ignore = "needs a kernel sequencer: tests/vm/seq_probe.sh runs it"]
    fn sysex_chunks_are_joined_per_sender() {
        let mut rx = AlsaSequencer::open("rx").unwrap();
        let port = rx.create_port("in", PortCaps::DUPLEX).unwrap();
        let tx = Seq::open(None, None, false).unwrap();
        let caps = PortCap::READ | PortCap::SUBS_READ;
        let mut sources = Vec::new();
        for name in [c"a", c"b"] {
            let tx_port = tx
                .create_simple_port(name, caps, PortType::MIDI_GENERIC)
                .unwrap();
            let subs = PortSubscribe::empty().unwrap();
            let sender = Addr {
                client: tx.client_id().unwrap(),
                port: tx_port,
            };
            subs.set_sender(sender);
            subs.set_dest(Addr {
                client: i32::from(rx.client()),
                port: i32::from(port.0),
            });
            tx.subscribe_port(&subs).unwrap();
            sources.push(addr(sender).unwrap());
        }
        let send = |from: SeqAddr, mut ev: Event| {
            ev.set_source(i32::from(from.port));
            ev.set_subs();
            ev.set_direct();
            tx.event_output_direct(&mut ev).unwrap();
        };
        let sysex = |from, chunk: &[u8]| send(from, Event::new_ext(EventType::Sysex, chunk));
        let (a, b) = (sources[0], sources[1]);
        sysex(a, &[0xF0, 1, 2]);
        sysex(b, &[0xF0, 9]);
        // Realtime may come in the middle of a SysEx and ends nothing.
        send(a, Event::new(EventType::Sensing, &()));
        sysex(a, &[3, 4]);
        sysex(b, &[0xF7]);
        sysex(a, &[5, 0xF7]);

        let mut got = Vec::new();
        while let Some(input) = rx.recv().unwrap() {
            if let SeqInput::Midi {
                source, message, ..
            } = input
            {
                got.push((source, message));
            }
        }
        assert_eq!(
            got,
            [
                (a, message(&[0xFE])),
                (b, message(&[0xF0, 9, 0xF7])),
                (a, message(&[0xF0, 1, 2, 3, 4, 5, 0xF7])),
            ]
        );
    }

    /// True if one of `fds` is readable now.
    fn readable(fds: &[RawFd]) -> bool {
        let mut p: Vec<_> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `p` holds `p.len()` valid pollfds; zero timeout.
        unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, 0) > 0 }
    }

    /// A receiving client and a sending one whose port `out` is connected to it, the
    /// subscription notice read.
    fn connected_pair() -> (AlsaSequencer, AlsaSequencer, PortId) {
        let mut rx = AlsaSequencer::open("rx").unwrap();
        let rx_port = rx.create_port("in", PortCaps::DUPLEX).unwrap();
        let mut tx = AlsaSequencer::open("tx").unwrap();
        let tx_port = tx.create_port("out", PortCaps::DUPLEX).unwrap();
        let at = |client, port: PortId| SeqAddr {
            client,
            port: port.0,
        };
        tx.connect(at(tx.client(), tx_port), at(rx.client(), rx_port))
            .unwrap();
        while rx.recv().unwrap().is_some() {}
        (rx, tx, tx_port)
    }

    #[test]
    #[ignore = "needs a kernel sequencer: tests/vm/seq_probe.sh runs it"]
    fn input_in_alsa_lib_buffer_keeps_an_fd_readable() {
        let (mut rx, mut tx, tx_port) = connected_pair();
        let fds = rx.fds().unwrap();
        assert!(!readable(&fds));

        // Fewer than alsa-lib reads from the kernel at once (500): the first recv takes them
        // all from the kernel. A reader that stops after a batch of 256 leaves 144 in
        // alsa-lib's buffer, which the kernel's fd knows nothing of.
        for i in 0..400 {
            tx.send(tx_port, None, &message(&[0x90, (i % 128) as u8, 1]))
                .unwrap();
        }
        assert!(readable(&fds));
        for _ in 0..256 {
            assert!(matches!(rx.recv().unwrap(), Some(SeqInput::Midi { .. })));
        }
        let (kernel, _) = fds.split_at(fds.len() - 1);
        assert!(!readable(kernel), "the kernel's fd alone tells of them");
        assert!(readable(&fds), "144 events wait and no fd says so");
        let mut rest = 0;
        while rx.recv().unwrap().is_some() {
            rest += 1;
        }
        assert_eq!(rest, 144);
        assert!(!readable(&fds));
    }

    #[test]
    #[ignore = "needs a kernel sequencer: tests/vm/seq_probe.sh runs it"]
    fn send_at_delivers_later_and_never_out_of_order() {
        let (mut rx, mut tx, tx_port) = connected_pair();

        let start = std::time::Instant::now();
        let (on, off) = (message(&[0x90, 60, 100]), message(&[0x80, 60, 0]));
        tx.send_at(tx_port, None, &on, Duration::from_millis(50))
            .unwrap();
        // Asked for earlier, but given after the note-on: it waits for it.
        tx.send_at(tx_port, None, &off, Duration::ZERO).unwrap();
        let fd = rx.fds().unwrap()[0];
        let mut got = Vec::new();
        while got.len() < 2 {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; a 2 s bound turns a lost event into a failure.
            assert_eq!(
                unsafe { libc::poll(&mut p, 1, 2000) },
                1,
                "got only {got:?}"
            );
            while let Some(SeqInput::Midi { message, .. }) = rx.recv().unwrap() {
                got.push(message);
            }
        }
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(got, [on, off]);
    }

    fn message(bytes: &[u8]) -> MidiMessage {
        MidiMessage::from_bytes(bytes).unwrap()
    }

    fn decoded(mut ev: Event) -> Vec<u8> {
        let (_, decoder) = coders().unwrap();
        decode(&decoder, &mut ev, &mut [0; DECODE_MAX]).to_vec()
    }

    fn ctrl(t: EventType, channel: u8, param: u32, value: i32) -> Vec<u8> {
        decoded(Event::new(
            t,
            &EvCtrl {
                channel,
                param,
                value,
            },
        ))
    }

    #[test]
    fn control14_becomes_msb_and_lsb_control_changes() {
        // Controller 7 (volume) = 0x1234: MSB 0x24 on CC 7, LSB 0x34 on CC 7 + 32.
        assert_eq!(
            ctrl(EventType::Control14, 2, 7, 0x1234),
            [0xB2, 7, 0x24, 0xB2, 39, 0x34]
        );
        // Controllers 32 and up have no LSB partner: one 7-bit change.
        assert_eq!(ctrl(EventType::Control14, 0, 70, 0x55), [0xB0, 70, 0x55]);
    }

    #[test]
    fn nrpn_and_rpn_become_their_four_control_changes() {
        // NRPN 0x0123 = 0x0456: CC 99/98 select the parameter, CC 6/38 carry the value.
        assert_eq!(
            ctrl(EventType::Nonregparam, 1, 0x0123, 0x0456),
            [0xB1, 99, 0x02, 0xB1, 98, 0x23, 0xB1, 6, 0x08, 0xB1, 38, 0x56]
        );
        // RPN 0 (pitch bend range) = 2 semitones: CC 101/100, then 6/38.
        assert_eq!(
            ctrl(EventType::Regparam, 15, 0, 2 << 7),
            [0xBF, 101, 0, 0xBF, 100, 0, 0xBF, 6, 2, 0xBF, 38, 0]
        );
    }

    #[test]
    fn every_short_message_survives_encode_then_decode() {
        let (mut encoder, _) = coders().unwrap();
        let messages: [&[u8]; 17] = [
            &[0x90, 60, 100],
            &[0x90, 60, 0],
            &[0x83, 61, 64],
            &[0xA4, 62, 10],
            &[0xB5, 7, 127],
            &[0xC6, 42],
            &[0xD7, 99],
            &[0xE8, 0x00, 0x00],
            &[0xE8, 0x7F, 0x7F],
            &[0xF1, 0x35],
            &[0xF2, 0x7F, 0x01],
            &[0xF3, 9],
            &[0xF6],
            &[0xF8],
            &[0xFA],
            &[0xFC],
            &[0xFF],
        ];
        for m in messages {
            let ev = encode(&mut encoder, m).unwrap();
            assert_eq!(decoded(ev), m, "{m:02X?}");
        }
        // Same status twice: the second still carries its status byte.
        let ev = encode(&mut encoder, &[0x90, 64, 1]).unwrap();
        assert_eq!(decoded(ev), [0x90, 64, 1]);
        // Undefined system messages have no event.
        for m in [0xF4, 0xF5, 0xF9, 0xFD] {
            assert!(encode(&mut encoder, &[m]).is_none(), "{m:02X}");
        }
    }

    #[test]
    fn encoder_is_reset_between_messages() {
        let (mut encoder, _) = coders().unwrap();
        assert!(encode(&mut encoder, &[0x90, 60]).is_none());
        let ev = encode(&mut encoder, &[0xC0, 5]).unwrap();
        assert_eq!(ev.get_type(), EventType::Pgmchange);
    }

    #[test]
    fn note_with_duration_is_not_midi() {
        let note = EvNote {
            channel: 0,
            note: 60,
            velocity: 100,
            off_velocity: 0,
            duration: 500,
        };
        assert!(decoded(Event::new(EventType::Note, &note)).is_empty());
    }
}
