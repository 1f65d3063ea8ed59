//! The QEMU guest agent (net family): what libvirt, KubeVirt, oVirt and Proxmox ask of a VM's
//! agent, answered by the VM itself. `protocol` is the agent (framing, commands, replies) and
//! `json` its reader, both pure and tested on the host; the channel they speak over is the
//! virtio-serial port `org.qemu.guest_agent.0`.

pub mod json;
pub mod protocol;

use crate::net::text;
pub mod console;

use crate::clock::Clock;
use crate::core64::{Ending, Line, Machine, Service};
use crate::net::Network;
use console::Console;
use protocol::{Agent, Facts, Shutdown};

/// The net family's service: the network (where there is a card) and the guest agent (where
/// there is a virtio-console), each working without the other.
pub struct NetVm {
    network: Option<Network>,
    agent: Option<(Console, Agent)>,
    clock: Clock,
    /// The RTC's time at the clock's start, in nanoseconds since the epoch.
    epoch_ns: u64,
    ending: Option<Ending>,
}

impl Service for NetVm {
    fn start(machine: &Machine) -> Self {
        let network = Network::start(crate::lapic::id(), machine);
        let clock = match &network {
            Some(network) => network.clock(),
            None => Clock::calibrate(),
        };
        let epoch_ns = crate::rtc::unix_seconds()
            .saturating_mul(1_000_000_000)
            .saturating_sub(clock.now_us().saturating_mul(1000));
        let agent =
            Console::start(crate::lapic::id(), machine.map).map(|console| (console, Agent::new()));
        NetVm { network, agent, clock, epoch_ns, ending: None }
    }

    fn line(&self) -> Option<Line> {
        self.network.as_ref()?.line()
    }

    fn poll(&mut self) {
        if let Some(network) = &mut self.network {
            network.poll();
        }
        let Some((console, agent)) = &mut self.agent else { return };
        let mut facts =
            Facts { now_ns: self.epoch_ns + self.clock.now_us() * 1000, ..Facts::default() };
        if let Some(network) = &self.network {
            network.describe(&mut facts);
        }
        self.ending = console.poll(agent, &facts).map(|mode| match mode {
            Shutdown::PowerDown => Ending::PowerOff,
            Shutdown::Halt => Ending::Halt,
            Shutdown::Reboot => Ending::Reset,
        });
    }

    fn ending(&self) -> Option<Ending> {
        self.ending
    }

    fn stop(&mut self) {
        if let Some(network) = &mut self.network {
            network.stop();
        }
    }
}
