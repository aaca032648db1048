//! SIGINT and SIGTERM: the first ends every session (BY to each peer), says goodbye on mDNS
//! and stops the loop; a second, while that goes on, exits at once.

/// What a shutdown signal asks of the shell.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Stop reconnecting, close every session, say goodbye on mDNS, stop the loop.
    Close,
    /// Exit now, with an error status.
    Exit,
}

/// The shutdown signals seen so far.
#[derive(Default)]
pub struct Shutdown {
    signals: u32,
}

impl Shutdown {
    pub fn on_signal(&mut self) -> Step {
        self.signals += 1;
        if self.signals == 1 {
            Step::Close
        } else {
            Step::Exit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_closes_the_next_exit() {
        let mut s = Shutdown::default();
        assert_eq!(s.on_signal(), Step::Close);
        assert_eq!(s.on_signal(), Step::Exit);
        assert_eq!(s.on_signal(), Step::Exit);
    }
}
