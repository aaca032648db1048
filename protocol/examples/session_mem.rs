//! Prints the heap bytes an idle established session holds, for 10, 100 and 1000 sessions made
//! through the Endpoint handshake on a simulated clock, and what is left after they are gone.
//! The first figure is the one a daemon sees (one endpoint, many sessions); the second also
//! counts the client endpoints of the simulation, one per peer host.
//! Run: `cargo run --release -p rtpmidid-protocol --example session_mem`.
#[path = "../tests/alloc/mod.rs"]
mod alloc;

use alloc::{idle_sessions, live_bytes, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    for n in [10, 100, 1000] {
        let before = live_bytes();
        let net = idle_sessions(n);
        let (client, server) = (net.clients, net.server);
        let held = live_bytes() - before;
        let before_server = live_bytes();
        drop(server);
        let server_held = before_server - live_bytes();
        drop(client);
        let after = live_bytes() - before;
        println!(
            "{n:>5} idle sessions: {:>6} bytes each on the endpoint holding them all, {:>6} \
             bytes per session both sides counted ({} client endpoints of one session each); \
             {after} bytes left after dropping",
            server_held / n as isize,
            held / (2 * n as isize),
            n
        );
    }
}
