//! Heap held by idle sessions, measured with a counting allocator (per thread, so the test
//! harness's own allocations do not count).
mod alloc;

use alloc::{idle_sessions, live_bytes, Counting};
use protocol::midi::MidiMessage;
use protocol::time::Duration;

#[global_allocator]
static ALLOC: Counting = Counting;

/// An idle established session (both ends counted) holds at most this many heap bytes: a
/// daemon with a thousand peers should not need hundreds of megabytes. (About 2.7 kB now;
/// 177 kB when every session held sixteen channels of journal state on each side.)
const IDLE_SESSION_MAX: isize = 8 * 1024;

#[test]
fn idle_sessions_are_small_and_freed() {
    let n = 100;
    let before = live_bytes();
    let net = idle_sessions(n);
    let per_session = (live_bytes() - before) / (2 * n as isize);
    assert!(
        per_session <= IDLE_SESSION_MAX,
        "{per_session} bytes per idle session"
    );
    drop(net);
    assert!(
        live_bytes() - before <= 0,
        "memory left after the sessions ended"
    );
}

/// What a burst of MIDI grows (send queue, event queue, journal history) is given back once it
/// is sent, delivered and confirmed; only the state of the channel played on stays.
#[test]
fn a_burst_leaves_only_channel_state_behind() {
    let mut net = idle_sessions(1);
    let idle = live_bytes();
    let now = net.now;
    let (_, session) = net.clients[0].sessions_mut().next().expect("a session");
    for i in 0..5000u32 {
        let note = [0x90, (i % 128) as u8, 1 + (i % 127) as u8];
        session.send_midi(now, &MidiMessage::from_bytes(&note).unwrap());
    }
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.server_midi, 5000);
    // One channel's journal state on each side (about 6 kB each) and small queues: about
    // 14 kB (1.4 MB when the queues kept what the burst grew).
    let grown = live_bytes() - idle;
    assert!(grown <= 16 * 1024, "{grown} bytes kept after the burst");
}
