//! Heap held by idle sessions, measured with a counting allocator (the only test in this
//! binary, so no other test allocates meanwhile).
mod alloc;

use alloc::{idle_sessions, live_bytes, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

/// An idle established session (both ends counted) holds at most this many heap bytes: a
/// daemon with a thousand peers should not need hundreds of megabytes.
const IDLE_SESSION_MAX: isize = 16 * 1024;

#[test]
fn idle_sessions_are_small_and_freed() {
    let n = 100;
    let before = live_bytes();
    let (client, server) = idle_sessions(n);
    let per_session = (live_bytes() - before) / (2 * n as isize);
    assert!(
        per_session <= IDLE_SESSION_MAX,
        "{per_session} bytes per idle session"
    );
    drop((client, server));
    assert!(
        live_bytes() - before <= 0,
        "memory left after the sessions ended"
    );
}
