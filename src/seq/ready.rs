//! A descriptor that is readable while input waits somewhere no kernel fd tells of: in
//! alsa-lib's input buffer, or in a queue of our own.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

pub struct ReadyFd {
    readable: UnixStream,
    waker: UnixStream,
    set: bool,
}

impl ReadyFd {
    pub fn new() -> io::Result<Self> {
        let (readable, waker) = UnixStream::pair()?;
        readable.set_nonblocking(true)?;
        Ok(ReadyFd {
            readable,
            waker,
            set: false,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.readable.as_raw_fd()
    }

    /// Makes the fd readable (`true`) or not; a system call only when that changes.
    pub fn set(&mut self, on: bool) {
        if on == self.set {
            return;
        }
        self.set = on;
        if on {
            // One byte in an empty socket: it fits.
            let _ = self.waker.write_all(&[1]);
        } else {
            let mut buf = [0u8; 16];
            while self.readable.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
    }
}
