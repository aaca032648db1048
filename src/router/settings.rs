//! The configuration's part of the graph: its connections, listeners and devices at start,
//! and what a reload changes of them.
use log::{info, warn};
use protocol::session;
use protocol::time::Instant;

use super::{DeviceId, ListenerId, ListenerKind, Router};
use crate::config::{self, Action, Admission, RawMidi, Settings};
use crate::options::ConnectTarget;

impl Router {
    /// Who may open sessions on listener `id`: a `[listener]` its section's keys over
    /// `[general]`'s, any other `[general]`'s (see `Settings::admission_of`).
    pub fn admission_of(&self, id: ListenerId, settings: &Settings) -> Admission {
        let listener = self.listener(id);
        let extra = listener.filter(|l| l.kind == ListenerKind::Extra);
        settings.admission_of(extra.map(|l| l.name.as_str()))
    }

    /// The AppleMIDI session settings of listener `id`: `settings`' under its name.
    pub fn session_config(&self, id: ListenerId, settings: &Settings) -> session::Config {
        let name = self.listener(id).map_or(&settings.name, |l| &l.name);
        session::Config {
            name: name.clone(),
            ..settings.session_config()
        }
    }

    /// The connections, listeners and `[rawmidi]` devices of `settings`; each device's id and
    /// section, for the shell that opens it. Exports are the sequencer's: without one they
    /// are ignored, with a warning.
    pub fn configure<'s>(
        &mut self,
        now: Instant,
        settings: &'s Settings,
    ) -> Vec<(DeviceId, &'s RawMidi)> {
        for c in &settings.connect {
            self.add_configured(now, c);
        }
        for l in &settings.listeners {
            self.add_listener(&l.name, l.port);
        }
        if settings.midi2.enabled {
            self.add_midi2_listener(settings.midi2.port);
        }
        if !self.alsa {
            for e in &settings.exports {
                warn!("[export {}] ignored: the daemon runs without ALSA", e.name);
            }
            if settings.export_auto.is_some() {
                warn!("export_auto ignored: the daemon runs without ALSA");
            }
        }
        let device = |r: &'s RawMidi| {
            let target = r.remote.as_ref().map(|(host, port)| ConnectTarget {
                name: Some(r.name.clone()),
                host: host.clone(),
                port: *port,
                midi2: false,
                credentials: None,
            });
            (self.add_device(&r.name, r.port, target), r)
        };
        settings.rawmidi.iter().map(device).collect()
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
        let devices = r.configure(Instant::from_micros(0), &s);
        assert!(devices.is_empty());
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
    fn devices_connect_to_their_host_once_there() {
        let s = settings(
            "[rawmidi Synth]\ndevice = /dev/snd/midiC1D0\nhost = 10.0.0.4\nremote_port = 5008\n\
             [rawmidi Pad]\ndevice = /dev/snd/midiC2D0\n",
        );
        let now = Instant::from_micros(0);
        let mut r = Router::new("us", false, false, 1);
        let devices: Vec<(DeviceId, String)> = r
            .configure(now, &s)
            .into_iter()
            .map(|(id, section)| (id, section.name.clone()))
            .collect();
        let names: Vec<&str> = devices.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["Synth", "Pad"]);
        let early = drain(&mut r).into_iter().any(
            |a| matches!(a, Do::OpenListener { name, .. } if name == "Synth" || name == "Pad"),
        );
        assert!(!early, "nothing until a device is there");
        r.device_present(now, devices[0].0, true);
        r.handle_timeout(now);
        let to = drain(&mut r).into_iter().find_map(|a| match a {
            Do::Connect { target, .. } => Some((target.name, target.host, target.port)),
            _ => None,
        });
        assert_eq!(to, Some((Some("Synth".into()), "10.0.0.4".into(), 5008)));
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
            credentials: None,
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
