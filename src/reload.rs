//! Reload when the configuration file changes: an inotify watch on its folder (editors replace
//! files by renaming, which a watch on the file itself would miss), registered with the loop.
use std::ffi::OsString;
use std::hash::Hash;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use log::warn;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use reactor::{Context, Handler, Interest};

pub struct Watch {
    inotify: Inotify,
    file_name: OsString,
}

impl Watch {
    /// Watches the folder of `path` for `path` being written or renamed into place; the
    /// handler asks [`Watch::ours`] when it is readable.
    fn new(path: &Path) -> io::Result<Watch> {
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

    /// [`Watch::new`], registered with `handler`; `None` (logged) if it cannot.
    pub fn start<S, T: Eq + Hash + Clone>(
        ctx: &mut Context<S, T>,
        path: &Path,
        handler: Handler<S, T>,
    ) -> Option<Watch> {
        let watch = Watch::new(path).and_then(|w| {
            let fd = w.inotify.as_fd().as_raw_fd();
            ctx.register(fd, Interest::READABLE, handler).map(|_| w)
        });
        watch
            .map_err(|e| warn!("cannot watch {} for changes: {e}", path.display()))
            .ok()
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
