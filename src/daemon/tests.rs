//! What the shell decides on its own: how a failure to start is told.
use super::Daemon;
use crate::config;
use crate::seq::fake::FakeSequencer;

/// An ALSA failure at the start is told as one, not as a UDP port that could not open (as
/// `export_auto`'s was).
#[test]
fn a_sequencer_that_fails_at_the_start_is_named() {
    for file in [
        "[general]\nexport_auto = hardware\n",
        "[export Keys]\nalsa_port = keystep\n",
    ] {
        let mut fake = FakeSequencer::new().unwrap();
        fake.refuse_watch();
        let settings = config::settings(file);
        let Err(e) = Daemon::new(settings, Some(Box::new(fake)), 1) else {
            panic!("the daemon started with {file:?}");
        };
        assert!(e.starts_with("cannot watch ALSA ports to export"), "{e}");
    }
}
