//! The configuration's part of the graph: its connections and listeners at start, and what
//! a reload changes of them.
use log::info;
use protocol::time::Instant;

use super::Router;
use crate::config::{self, Action, Settings};

impl Router {
    /// The connections and listeners of `settings` (the shell adds `[rawmidi]` devices: it
    /// keeps their paths).
    pub fn configure(&mut self, now: Instant, settings: &Settings) {
        for c in &settings.connect {
            self.add_configured(now, c);
        }
        for l in &settings.listeners {
            self.add_listener(&l.name, l.port);
        }
        if settings.midi2.enabled {
            self.add_midi2_listener(settings.midi2.port);
        }
    }

    /// A connection of the settings: like --connect, with ALSA wanted once something
    /// subscribes to its port, unless kept connected.
    fn add_configured(&mut self, now: Instant, c: &config::Connection) {
        let keep = c.keep_connected.unwrap_or(false);
        self.add_connection(now, c.target(), keep, c.alsa_port_name.as_deref());
    }

    /// What a reload's `action` changes of the graph: listeners, connections, the hub. The
    /// rest is the shell's.
    pub fn reconfigure(&mut self, now: Instant, action: &Action) {
        match action {
            Action::RemoveListener(name) => {
                info!("reload: closing [listener {name}]");
                if let Some(id) = self.extra_listener(name) {
                    self.remove_listener(id);
                }
            }
            Action::AddListener(l) => {
                info!(
                    "reload: opening [listener {}] on UDP port {}",
                    l.name, l.port
                );
                self.add_listener(&l.name, l.port);
            }
            Action::Disconnect(name) => {
                info!("reload: closing connection {name:?}");
                if let Some(c) = self.configured(name) {
                    self.remove_connection(c);
                }
            }
            Action::Connect(c) => {
                info!(
                    "reload: new connection {:?} to {}:{}",
                    c.name, c.host, c.port
                );
                // A connection of that name made over the control socket gives way.
                if let Some(old) = self.configured(&c.name) {
                    self.remove_connection(old);
                }
                self.add_configured(now, c);
            }
            Action::SetHub(on) => {
                info!("reload: hub {}", if *on { "on" } else { "off" });
                self.set_hub(*on);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings;
    use crate::router::{Action as Do, ListenerKind};

    fn drain(r: &mut Router) -> Vec<Do> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    #[test]
    fn the_settings_give_connections_and_listeners() {
        let s = settings(
            "[connect Stage]\nhost = 10.0.0.2\n[listener Extra]\nport = 5010\n\
             [midi2]\nenabled = true\n",
        );
        let mut r = Router::new("us", false, false, 1);
        r.configure(Instant::from_micros(0), &s);
        let stage = r.configured("Stage").and_then(|c| r.connection(c));
        assert_eq!(stage.map(|c| c.target.host.as_str()), Some("10.0.0.2"));
        let opened: Vec<(ListenerKind, Option<u16>)> = drain(&mut r)
            .into_iter()
            .filter_map(|a| match a {
                Do::OpenListener { listener, port, .. } => {
                    Some((r.listener(listener).unwrap().kind, port))
                }
                _ => None,
            })
            .collect();
        let midi2_port = s.midi2.port;
        assert_eq!(
            opened,
            [
                (ListenerKind::Extra, Some(5010)),
                (ListenerKind::Midi2, midi2_port)
            ]
        );
    }

    #[test]
    fn a_reloaded_connection_replaces_one_of_its_name() {
        let now = Instant::from_micros(0);
        let mut r = Router::new("us", false, false, 1);
        let s = settings("[connect Stage]\nhost = 10.0.0.3\n");
        let by_hand = crate::options::ConnectTarget {
            name: Some("Stage".into()),
            host: "10.0.0.2".into(),
            port: 5004,
            midi2: false,
        };
        let old = r.add_connection(now, by_hand, true, None);
        r.reconfigure(now, &Action::Connect(s.connect[0].clone()));
        let new = r.configured("Stage").unwrap();
        assert!(r.connection(old).is_none());
        assert_eq!(r.connection(new).unwrap().target.host, "10.0.0.3");
        r.reconfigure(now, &Action::Disconnect("Stage".into()));
        assert_eq!(r.configured("Stage"), None);
    }

    #[test]
    fn reloaded_listeners_open_and_close_and_the_hub_follows() {
        let now = Instant::from_micros(0);
        let mut r = Router::new("us", false, false, 1);
        let s = settings("[listener Extra]\nport = 5010\n");
        r.reconfigure(now, &Action::AddListener(s.listeners[0].clone()));
        let id = r.extra_listener("Extra").unwrap();
        drain(&mut r);
        r.reconfigure(now, &Action::RemoveListener("Extra".into()));
        assert_eq!(drain(&mut r), [Do::Withdraw(id), Do::CloseListener(id)]);
        r.reconfigure(now, &Action::SetHub(true));
        assert!(r.hub());
    }
}
