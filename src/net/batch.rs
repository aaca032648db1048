//! Datagrams sent together with `sendmmsg`.
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use log::debug;

use super::MAX_DATAGRAM;

/// Datagrams sent with one `sendmmsg` at most.
const SEND_BATCH: usize = 64;

/// Datagrams sent together: one system call per batch and socket rather than one per
/// datagram, which counts when the hub sends a message to hundreds of peers. Sessions write
/// their datagrams in place, in `bytes`, one after the other.
pub struct SendBatch {
    /// Room for a batch and one more datagram of the largest size; its pages are touched
    /// only as far as datagrams reach.
    bytes: Vec<u8>,
    /// Bytes of `bytes` the datagrams take.
    used: usize,
    /// Each datagram's socket, start in `bytes`, length and destination.
    datagrams: Vec<(RawFd, usize, usize, socket2::SockAddr)>,
    /// The system call's headers for a run, kept: zeroing arrays for a whole batch at each
    /// call costs more than sending a lone datagram.
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            bytes: vec![0; 2 * MAX_DATAGRAM],
            used: 0,
            datagrams: Vec::with_capacity(SEND_BATCH),
            iov: Vec::with_capacity(SEND_BATCH),
            msgs: Vec::with_capacity(SEND_BATCH),
        }
    }

    /// Where the next datagram is written: room for the largest, after those held (sent
    /// first if the batch is full).
    pub fn room(&mut self) -> &mut [u8] {
        if self.datagrams.len() == SEND_BATCH || self.bytes.len() - self.used < MAX_DATAGRAM {
            self.send();
        }
        &mut self.bytes[self.used..]
    }

    /// The `len` bytes last written at [`Self::room`] go to `dst` from socket `fd`.
    pub fn push(&mut self, fd: RawFd, dst: SocketAddr, len: usize) {
        self.datagrams.push((fd, self.used, len, dst.into()));
        self.used += len;
    }

    /// Sends what it holds, a `sendmmsg` for each run of datagrams from one socket; a datagram
    /// that fails is logged and skipped, as with `sendto`.
    pub fn send(&mut self) {
        let mut start = 0;
        while let Some(&(fd, ..)) = self.datagrams.get(start) {
            let run = self.datagrams[start..]
                .iter()
                .take_while(|d| d.0 == fd)
                .count();
            self.send_run(fd, start..start + run);
            start += run;
        }
        self.used = 0;
        self.datagrams.clear();
    }

    fn send_run(&mut self, fd: RawFd, run: std::ops::Range<usize>) {
        let datagrams = &self.datagrams[run];
        let n = datagrams.len();
        self.iov.clear();
        self.iov
            .extend(datagrams.iter().map(|(_, start, len, _)| libc::iovec {
                iov_base: self.bytes[*start..].as_ptr() as *mut libc::c_void,
                iov_len: *len,
            }));
        self.msgs.clear();
        for ((.., addr), iov) in datagrams.iter().zip(self.iov.iter_mut()) {
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_namelen = addr.len();
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            self.msgs.push(msg);
        }
        let mut done = 0;
        while done < n {
            let rest = &mut self.msgs[done..n];
            // SAFETY: `rest` points at initialized headers whose buffers and addresses
            // (`self.bytes`, `self.iov`, `self.datagrams`) outlive the call and are not touched
            // meanwhile.
            let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if sent > 0 {
                done += sent as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if sent == 0 || e.kind() != io::ErrorKind::Interrupted {
                // The first datagram left failed (full buffer, ICMP error): it is lost, as a
                // failed `sendto` would lose it; the rest still go.
                debug!("send to {:?}: {e}", datagrams[done].3.as_socket());
                done += 1;
            }
        }
    }
}
