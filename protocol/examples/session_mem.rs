//! Prints the heap bytes an idle established session holds, for 10, 100 and 1000 sessions made
//! through the Endpoint handshake on a simulated clock, and what is left after they are gone.
//! Run: `cargo run --release -p rtpmidid-protocol --example session_mem`.
#[path = "../tests/alloc/mod.rs"]
mod alloc;

use alloc::{idle_sessions, live_bytes, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    for n in [10, 100, 1000] {
        let before = live_bytes();
        let (client, server) = idle_sessions(n);
        let held = live_bytes() - before;
        drop((client, server));
        let after = live_bytes() - before;
        println!(
            "{n:>5} sessions a side: {:>8} bytes per session ({held} bytes for {}), {after} bytes left after dropping",
            held / (2 * n as isize),
            2 * n
        );
    }
}
