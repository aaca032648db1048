//! Reload when the configuration file changes: an inotify watch on its folder (editors replace
//! files by renaming, which a watch on the file itself would miss), registered with the loop.
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use log::debug;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use reactor::Interest;

use crate::daemon::{Ctx, Daemon};

pub struct Watch {
    inotify: Inotify,
    file_name: OsString,
}

impl Watch {
    pub fn start(path: &Path, ctx: &mut Ctx) -> io::Result<Watch> {
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
        ctx.register(inotify.as_fd().as_raw_fd(), Interest::READABLE, on_change)?;
        Ok(Watch { inotify, file_name })
    }

    /// Drains the queued events; true if one concerns our file.
    fn ours(&self) -> bool {
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

fn on_change(daemon: &mut Daemon, ctx: &mut Ctx, _event: reactor::Event) {
    let changed = daemon.ops.watch.as_ref().is_some_and(Watch::ours);
    if changed {
        debug!("configuration file changed");
        daemon.reload(ctx, "file changed");
    }
}
