//! This machine's MIDI side in the shell: the ALSA bridge (without `--no-alsa`) and the raw
//! MIDI devices. What the engine sends them goes through [`Local`]; what they say goes to it.
use std::time::Instant as StdInstant;

use protocol::midi::MidiMessage;
use protocol::time::{Duration, Instant};

use super::{Clock, Ctx, Daemon, TimerId};
use crate::bridge::{self, Bridge, ExportAs, PortMatch};
use crate::config::Settings;
use crate::device::Devices;
use crate::engine::Local;
use crate::router::{DeviceId, PeerPortId, Source};
use crate::seq::{SeqAddr, Sequencer};

/// Retry period while the sequencer's output is full.
const SEQ_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// How often the raw MIDI devices' paths are looked for (a USB device comes and goes with its
/// node).
const DEVICE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct LocalSide {
    pub(super) bridge: Option<Bridge<PeerPortId>>,
    pub(super) devices: Devices<DeviceId>,
    clock: Clock,
    /// Scratch, kept to not allocate per read.
    actions: Vec<bridge::Action<PeerPortId>>,
    messages: Vec<MidiMessage>,
}

impl LocalSide {
    /// The bridge to `sequencer`, if there is one, watching for the ports `settings` export;
    /// no device yet.
    pub(super) fn open(
        sequencer: Option<Box<dyn Sequencer>>,
        settings: &Settings,
        clock: Clock,
    ) -> Result<LocalSide, String> {
        let bridge = sequencer.map(Bridge::new).transpose();
        let mut bridge = bridge.map_err(|e| format!("ALSA sequencer: {e}"))?;
        if let Some(bridge) = bridge.as_mut() {
            let watch = |e| format!("cannot watch ALSA ports to export: {e}");
            if let Some(rule) = settings.export_auto.clone() {
                bridge.set_auto_export(rule).map_err(watch)?;
            }
            for e in &settings.exports {
                let how = ExportAs {
                    name: e.name.clone(),
                    port: e.port,
                };
                let ports = PortMatch::parse(&e.alsa_port);
                bridge.add_export_section(ports, how).map_err(watch)?;
            }
        }
        Ok(LocalSide {
            bridge,
            devices: Devices::new(),
            clock,
            actions: Vec::new(),
            messages: Vec::new(),
        })
    }

    /// How long until `at`, from the clock read now: what the turn took before this send (a
    /// long turn, as after a stall) must not delay the playout.
    fn after(&self, at: Option<Instant>) -> Option<Duration> {
        at.map(|at| at.saturating_duration_since(self.clock.at(StdInstant::now())))
    }

    pub(super) fn delete_port(&mut self, port: PeerPortId) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.remove_peer(port);
        }
    }

    /// Retries what the sequencer had no room for.
    pub(super) fn flush_sequencer(&mut self) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.flush();
        }
    }

    /// Asks the loop to come back for what waits: output the sequencer had no room for, and
    /// devices' writes.
    pub(super) fn arm(&mut self, ctx: &mut Ctx) {
        if self.bridge.as_ref().is_some_and(|b| b.backlog() > 0) {
            ctx.set_timer(TimerId::SeqFlush, ctx.now() + SEQ_RETRY);
        }
        self.devices.arm(ctx);
    }
}

impl Local for LocalSide {
    fn to_port(&mut self, port: PeerPortId, message: &MidiMessage, at: Option<Instant>) {
        let after = self.after(at);
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.send_to_port(port, message, after);
        }
    }

    fn to_exported(&mut self, local: SeqAddr, message: &MidiMessage, at: Option<Instant>) {
        let after = self.after(at);
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.send_to_exported(local, message, after);
        }
    }

    fn to_device(&mut self, device: DeviceId, message: &MidiMessage) {
        self.devices.send(device, message);
    }
}

impl Daemon {
    /// Watches the sequencer, if there is one.
    pub(super) fn watch_sequencer(&self, ctx: &mut Ctx) -> Result<(), String> {
        let Some(bridge) = &self.local.bridge else {
            return Ok(());
        };
        bridge
            .watch(ctx, |d, ctx, e| d.read_sequencer(ctx, e))
            .map_err(|e| format!("cannot watch the sequencer: {e}"))
    }

    /// What the sequencer has, to the engine.
    fn read_sequencer(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let mut actions = std::mem::take(&mut self.local.actions);
        if let Some(bridge) = self.local.bridge.as_mut() {
            bridge.read(ctx, event, &mut actions);
        }
        for action in actions.drain(..) {
            self.engine.handle_alsa(now, action, &mut self.local);
        }
        self.local.actions = actions;
        self.pump(ctx);
    }

    /// A device became writable or has bytes: its MIDI to wherever the router says.
    fn read_device(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let mut messages = std::mem::take(&mut self.local.messages);
        let ready = self.local.devices.ready(ctx, now, event, &mut messages);
        if let Some((id, failed)) = ready {
            for message in messages.drain(..) {
                let from = Source::Device(id);
                self.engine
                    .forward(now, from, message, (None, None), &mut self.local);
            }
            if failed {
                self.engine.router.device_present(now, id, false);
            }
        }
        self.local.messages = messages;
        self.pump(ctx);
    }

    /// Looks for the devices' paths; the router hears of those that came or went.
    pub(super) fn look_for_devices(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        let router = &mut self.engine.router;
        let changed = |id, present| router.device_present(now, id, present);
        self.local.devices.look(ctx, now, changed);
        if !self.local.devices.is_empty() {
            ctx.set_timer(TimerId::RawMidi, ctx.now() + DEVICE_POLL);
        }
        self.pump(ctx);
    }

    /// Writes what the devices have queued; true if one failed (the router has closed its
    /// sessions).
    pub(super) fn flush_devices(&mut self, ctx: &mut Ctx, now: Instant) -> bool {
        let mut failed = false;
        let router = &mut self.engine.router;
        self.local.devices.flush(ctx, now, |id| {
            router.device_present(now, id, false);
            failed = true;
        });
        failed
    }

    /// The router's `CreatePort`: a failure is the router's to know.
    pub(super) fn create_port(&mut self, port: PeerPortId, name: &str) -> Result<(), String> {
        let bridge = self.local.bridge.as_mut();
        if let Some(Err(e)) = bridge.map(|b| b.add_peer(port, name)) {
            self.engine.router.port_failed(port);
            return Err(format!("cannot create an ALSA port for {name:?}: {e}"));
        }
        Ok(())
    }

    /// The router's `OpenDevice`: one that cannot open counts as not there.
    pub(super) fn open_device(&mut self, ctx: &mut Ctx, now: Instant, id: DeviceId) {
        let devices = &mut self.local.devices;
        if !devices.open(ctx, now, id, |d, ctx, e| d.read_device(ctx, e)) {
            self.engine.router.device_present(now, id, false);
        }
    }

    /// `ctl export` (`on`) and `ctl unexport`: connects local port `addr` to the Network
    /// port both ways, or removes those connections; the export follows as for anyone's
    /// connections. Returns the name the export is announced under.
    pub(super) fn export_local(
        &mut self,
        now: Instant,
        addr: SeqAddr,
        on: bool,
    ) -> Result<String, String> {
        let verb = if on { "export" } else { "unexport" };
        let Some(bridge) = self.local.bridge.as_mut() else {
            return Err(format!(
                "cannot {verb} {addr}: the daemon runs without ALSA (--no-alsa)"
            ));
        };
        let mut actions = Vec::new();
        let done = if on {
            bridge.export(addr, &mut actions)
        } else {
            bridge.unexport(addr, &mut actions)
        };
        // Before the error: a half-made export is still started or ended.
        let name = self.engine.exported(now, addr, actions, &mut self.local);
        done.map_err(|e| format!("cannot {verb} {addr}: {e}"))?;
        Ok(name)
    }
}
