//! A reload: the running settings and the new ones turned into the [`Action`]s that take the
//! daemon from one to the other.
use log::{Level, LevelFilter};

use super::{Connection, Listener, Settings, Timeouts};

/// One change that takes `old` settings to `new` ones, as the daemon applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close the session of this connection and stop reconnecting.
    Disconnect(String),
    Connect(Connection),
    SetHub(bool),
    /// New name, timeouts or journal switch: sessions started from now on use them.
    SessionConfig,
    SetLogLevel(LevelFilter),
    /// Close the `[listener]` of this name.
    RemoveListener(String),
    AddListener(Listener),
    /// Changes the ALSA bridge or mDNS applies when it is there (exports, client name, mDNS
    /// settings).
    Bridge(&'static str),
    /// New `[mdns]` include/exclude filters: they apply to peers discovered from now on.
    PeerFilter,
    /// New `[general]` limits or networks: for new invitations on every listener that uses
    /// them, and for peers discovered from now on.
    Admission,
    /// A change that needs a restart (ports, bound addresses, control socket); it is ignored.
    NeedsRestart(&'static str),
}

impl Action {
    /// What the log says of this change: when it applies, or that it does not; `None` for
    /// the changes the router's and the log level's own effects tell.
    pub fn note(&self) -> Option<(Level, String)> {
        let info = |line: &str| Some((Level::Info, format!("reload: {line}")));
        match self {
            Action::SessionConfig => {
                info("new name, timeouts or journal setting apply to new sessions")
            }
            Action::Admission => info("new limits or allow/deny networks apply to new invitations"),
            Action::PeerFilter => info("new [mdns] filters apply to peers discovered from now on"),
            Action::Bridge(what) => Some((
                Level::Warn,
                format!("reload: {what} changed; it takes effect at the next start"),
            )),
            Action::NeedsRestart(what) => Some((
                Level::Warn,
                format!("reload: {what} changed; restart rtpmidid to apply it"),
            )),
            Action::SetLogLevel(_)
            | Action::RemoveListener(_)
            | Action::AddListener(_)
            | Action::Disconnect(_)
            | Action::Connect(_)
            | Action::SetHub(_) => None,
        }
    }
}

/// What to do to go from `old` to `new`: removals before additions, so a connection whose
/// host changed is closed and opened again, and nothing else is touched.
pub fn diff(old: &Settings, new: &Settings) -> Vec<Action> {
    let mut actions = Vec::new();
    for c in &old.connect {
        if !new.connect.contains(c) {
            actions.push(Action::Disconnect(c.name.clone()));
        }
    }
    for c in &new.connect {
        if !old.connect.contains(c) {
            actions.push(Action::Connect(c.clone()));
        }
    }
    if old.hub != new.hub {
        actions.push(Action::SetHub(new.hub));
    }
    if old.session_config_fields() != new.session_config_fields() {
        actions.push(Action::SessionConfig);
    }
    if old.log_level != new.log_level {
        actions.push(Action::SetLogLevel(new.log_level));
    }
    if old.alsa_name != new.alsa_name {
        actions.push(Action::Bridge("alsa_name"));
    }
    if old.exports != new.exports {
        actions.push(Action::Bridge("[export]"));
    }
    for l in &old.listeners {
        if !new.listeners.contains(l) {
            actions.push(Action::RemoveListener(l.name.clone()));
        }
    }
    for l in &new.listeners {
        if !old.listeners.contains(l) {
            actions.push(Action::AddListener(l.clone()));
        }
    }
    if (old.mdns.enabled, &old.mdns.interfaces) != (new.mdns.enabled, &new.mdns.interfaces) {
        actions.push(Action::Bridge("[mdns]"));
    }
    if (&old.mdns.include, &old.mdns.exclude) != (&new.mdns.include, &new.mdns.exclude) {
        actions.push(Action::PeerFilter);
    }
    if old.admission != new.admission {
        actions.push(Action::Admission);
    }
    if old.rawmidi != new.rawmidi {
        actions.push(Action::NeedsRestart("[rawmidi]"));
    }
    if old.midi2 != new.midi2 {
        actions.push(Action::NeedsRestart("[midi2]"));
    }
    if old.port != new.port {
        actions.push(Action::NeedsRestart("port"));
    }
    if old.bind != new.bind {
        actions.push(Action::NeedsRestart("bind"));
    }
    if old.control != new.control {
        actions.push(Action::NeedsRestart("control"));
    }
    if old.playout_delay != new.playout_delay {
        actions.push(Action::NeedsRestart("playout_delay"));
    }
    if old.export_auto != new.export_auto {
        actions.push(Action::NeedsRestart("export_auto"));
    }
    if old.sysex_rate != new.sysex_rate {
        actions.push(Action::NeedsRestart("sysex_rate"));
    }
    actions
}

impl Settings {
    /// What new sessions are made with (the hub marks their SSRCs).
    fn session_config_fields(&self) -> (&str, &Timeouts, bool, bool) {
        (&self.name, &self.timeouts, self.journal, self.hub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::command_line;
    use crate::config::{parse, resolve, settings};

    #[test]
    fn diff_touches_only_what_changed() {
        let old = settings("[connect a]\nhost = h1\n[connect b]\nhost = h2\n");
        assert_eq!(diff(&old, &old), vec![]);
        let new = settings(
            "[connect a]\nhost = h1\n[connect b]\nhost = h2b\n[connect c]\nhost = h3\n\
             [hub]\nenabled = yes\n",
        );
        let b2 = new.connect[1].clone();
        let c = new.connect[2].clone();
        assert_eq!(
            diff(&old, &new),
            vec![
                Action::Disconnect("b".into()),
                Action::Connect(b2),
                Action::Connect(c),
                Action::SetHub(true),
                // New sessions mark their SSRCs as a hub's.
                Action::SessionConfig
            ]
        );
        let fewer = settings("[connect b]\nhost = h2\n");
        assert_eq!(diff(&old, &fewer), vec![Action::Disconnect("a".into())]);
    }

    #[test]
    fn midi2_changes_need_a_restart_and_new_credentials_reconnect() {
        let conn = "[connect a]\nhost = h\nprotocol = midi2\n";
        let old = settings(&format!(
            "{conn}user = u\npassword = p1\n[midi2]\nsecret = s\n"
        ));
        let auth = settings(&format!(
            "{conn}user = u\npassword = p1\n[midi2]\nsecret = s\nauth = none\n"
        ));
        assert_eq!(diff(&old, &auth), vec![Action::NeedsRestart("[midi2]")]);
        let password = settings(&format!(
            "{conn}user = u\npassword = p2\n[midi2]\nsecret = s\n"
        ));
        assert_eq!(
            diff(&old, &password),
            vec![
                Action::Disconnect("a".into()),
                Action::Connect(password.connect[0].clone())
            ]
        );
    }

    #[test]
    fn command_line_connections_survive_reloads() {
        let cli = command_line("-C keep@h9:9000 --hub");
        let old = resolve(
            &cli,
            &parse("x", "[connect a]\nhost = h1\n").unwrap(),
            || "h".into(),
        );
        let new = resolve(&cli, &parse("x", "[hub]\nenabled = no\n").unwrap(), || {
            "h".into()
        });
        // The file's connection goes; the command line's stays, and so does --hub.
        assert_eq!(diff(&old, &new), vec![Action::Disconnect("a".into())]);
    }

    #[test]
    fn diff_of_names_options_and_restart_only_settings() {
        let old = settings("[general]\nname = A\n");
        let new = settings(
            "[general]\nname = B\nalsa_name = x\nport = 6000\nbind = ::1\nlog_level = info\n\
             control = /tmp/x\n[export e]\nalsa_port = 1:0\n[listener l]\nport = 7000\n\
             [mdns]\nenabled = no\n",
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                Action::SessionConfig,
                Action::SetLogLevel(LevelFilter::Info),
                Action::Bridge("alsa_name"),
                Action::Bridge("[export]"),
                Action::AddListener(new.listeners[0].clone()),
                Action::Bridge("[mdns]"),
                Action::NeedsRestart("port"),
                Action::NeedsRestart("bind"),
                Action::NeedsRestart("control"),
            ]
        );
        let timeouts = settings("[general]\nname = A\n[timeouts]\nck_interval = 3\n");
        assert_eq!(diff(&old, &timeouts), vec![Action::SessionConfig]);
    }

    #[test]
    fn a_reload_notes_what_applies_later_and_what_does_not_apply() {
        let note = |a: Action| a.note();
        let later = "reload: new name, timeouts or journal setting apply to new sessions";
        assert_eq!(
            note(Action::SessionConfig),
            Some((Level::Info, later.into()))
        );
        let restart = "reload: port changed; restart rtpmidid to apply it";
        assert_eq!(
            note(Action::NeedsRestart("port")),
            Some((Level::Warn, restart.into()))
        );
        let next = "reload: [mdns] changed; it takes effect at the next start";
        assert_eq!(
            note(Action::Bridge("[mdns]")),
            Some((Level::Warn, next.into()))
        );
        assert_eq!(note(Action::SetHub(true)), None);
    }
}
