//! Reload when the configuration file changes: an inotify watch on its folder (editors replace
//! files by renaming, which a watch on the file itself would miss). The daemon registers its
//! descriptor with the loop.
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

pub struct Watch {
    inotify: Inotify,
    file_name: OsString,
}

impl Watch {
    /// Watches the folder of `path` for `path` being written or renamed into place; the
    /// caller polls [`Watch::fd`] and asks [`Watch::ours`] when it is readable.
    pub fn new(path: &Path) -> io::Result<Watch> {
        let file_name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file"))?
            .to_os_string();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // A finished write, or a file renamed into place.
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO,
        )?;
        Ok(Watch { inotify, file_name })
    }

    pub fn fd(&self) -> RawFd {
        self.inotify.as_fd().as_raw_fd()
    }

    /// Drains the queued events; true if one concerns our file.
    pub fn ours(&self) -> bool {
        let mut hit = false;
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            hit |= events
                .iter()
                .any(|e| e.name.as_deref() == Some(self.file_name.as_os_str()));
        }
        hit
    }
}
