//! Reload when the configuration file changes: an inotify watch on its folder (editors replace
//! files by renaming, which a watch on the file itself would miss), registered with the loop.
use std::ffi::OsString;
use std::hash::Hash;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use log::debug;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use reactor::{Context, Interest};

/// What the loop's state provides to reload when the file changes.
pub trait Reload: Sized + 'static {
    type Timer: Eq + Hash + Clone;

    /// The watch, while there is one.
    fn watch(&self) -> Option<&Watch>;

    fn reload(&mut self, ctx: &mut Context<Self, Self::Timer>, why: &str);
}

pub struct Watch {
    inotify: Inotify,
    file_name: OsString,
}

impl Watch {
    pub fn start<R: Reload>(path: &Path, ctx: &mut Context<R, R::Timer>) -> io::Result<Watch> {
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
        ctx.register(
            inotify.as_fd().as_raw_fd(),
            Interest::READABLE,
            on_change::<R>,
        )?;
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

fn on_change<R: Reload>(state: &mut R, ctx: &mut Context<R, R::Timer>, _event: reactor::Event) {
    if state.watch().is_some_and(Watch::ours) {
        debug!("configuration file changed");
        state.reload(ctx, "file changed");
    }
}
