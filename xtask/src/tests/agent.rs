//! The guest agent in the net VM, under TCG: the net qcow2 under SeaBIOS and under OVMF with a
//! virtio-serial port named `org.qemu.guest_agent.0` on a socket (as libvirt, Proxmox and
//! KubeVirt's virt-launcher give it) and user networking. The test speaks to the port as those
//! clients do: it waits for QEMU's VSERPORT_CHANGE (the guest opened the port: what libvirt
//! waits for, and KubeVirt's AgentConnected), syncs as libvirt does, asks KubeVirt's required
//! commands and every other one the agent answers, sends Proxmox's pipelined write, garbage and
//! a 1 MiB line, and ends with guest-shutdown, which must power the VM off within 2 s.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::harness::*;
use crate::domain::formats::{Family, Format};
use crate::domain::image::DEFAULT_MESSAGE;
use crate::infra::qemu::{self, Bus, Firmware, NetBackend, Nic, Vm, VmConfig};
use crate::infra::tools;

use qemu::AGENT_PORT as PORT;
/// The MAC QEMU gives user networking's card.
const MAC: &str = "52:54:00:12:34:56";
/// How long one reply may take (a TCG VM beside others on 2 cores).
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// The commands KubeVirt requires guest-info to list as enabled (else it calls the agent
/// unsupported).
pub(super) const KUBEVIRT_REQUIRED: [&str; 10] = [
    "guest-ping",
    "guest-get-time",
    "guest-info",
    "guest-shutdown",
    "guest-network-get-interfaces",
    "guest-get-fsinfo",
    "guest-get-host-name",
    "guest-get-users",
    "guest-get-timezone",
    "guest-get-osinfo",
];

/// The agent's end of the socket QEMU listens on for the port.
pub(super) struct Channel {
    stream: UnixStream,
    /// Bytes read past the last line returned.
    pending: Vec<u8>,
    what: String,
}

impl Channel {
    pub(super) fn new(stream: UnixStream, what: &str) -> Channel {
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Channel { stream, pending: Vec::new(), what: what.to_string() }
    }

    pub(super) fn send(&self, bytes: &[u8]) {
        (&self.stream).write_all(bytes).unwrap_or_else(|e| panic!("{}: writing: {e}", self.what));
    }

    /// The next line the agent writes (its line break removed), or a panic after `timeout`.
    pub(super) fn line(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line = self.pending[..end].to_vec();
                self.pending.drain(..=end);
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no reply line in {timeout:?}; so far {:?}",
                self.what,
                String::from_utf8_lossy(&self.pending)
            );
            let mut buffer = [0u8; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) => panic!("{}: the socket closed", self.what),
                Ok(n) => self.pending.extend_from_slice(&buffer[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{}: reading: {e}", self.what),
            }
        }
    }

    /// Sends one command line; its one reply line, as text.
    pub(super) fn ask(&mut self, json: &str) -> String {
        self.send(format!("{json}\n").as_bytes());
        String::from_utf8_lossy(&self.line(REPLY_TIMEOUT)).into_owned()
    }

    /// libvirt's sync: `guest-sync` with a fresh id, skipping whatever comes before its answer.
    pub(super) fn sync(&mut self, id: u64) {
        self.send(
            format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{id}}}}}\n").as_bytes(),
        );
        let want = format!("{{\"return\": {id}}}");
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while Instant::now() < deadline {
            if String::from_utf8_lossy(&self.line(REPLY_TIMEOUT)) == want {
                return;
            }
        }
        panic!("{}: no {want} in {REPLY_TIMEOUT:?}", self.what);
    }
}

/// The net qcow2 with the agent's port on the abstract socket `socket` and user networking.
fn agent_vm(mut config: VmConfig, socket: &str) -> VmConfig {
    config.nic =
        Some(Nic { model: None, backend: NetBackend::User { forward_to: None }, mac: None });
    config.extra.extend(qemu::agent_channel(socket));
    config
}

/// Waits for QEMU's VSERPORT_CHANGE saying the guest opened the port.
pub(super) fn wait_for_open_port(vm: &mut Vm) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let log = vm.qmp_log();
        if log
            .lines()
            .any(|line| line.contains("VSERPORT_CHANGE") && line.contains("\"open\": true"))
        {
            return;
        }
        vm.check_running().unwrap();
        assert!(
            Instant::now() < deadline,
            "{}: the guest never opened {PORT}: {log}",
            vm.description()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds since the epoch, now.
fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Everything the clients ask, on one VM; it ends powered off by guest-shutdown.
fn assert_answers_the_agent(config: VmConfig) {
    let socket = qemu::socket_name("qga");
    let mut vm = Vm::start(&agent_vm(config, &socket)).unwrap();
    let what = vm.description().to_string();
    let stream = qemu::connect(&socket, || Ok(())).unwrap();
    let mut agent = Channel::new(stream, &what);
    wait_for_open_port(&mut vm);
    agent.sync(4_081_729);

    // KubeVirt's and VDSM's first question: what is there.
    let info = agent.ask(r#"{"execute":"guest-info"}"#);
    assert!(info.starts_with(r#"{"return": {"version": ""#), "{what}: {info}");
    for command in KUBEVIRT_REQUIRED {
        assert!(
            info.contains(&format!(r#"{{"enabled": true, "name": "{command}""#)),
            "{what}: guest-info lacks {command}: {info}"
        );
    }
    assert_eq!(agent.ask(r#"{"execute":"guest-ping"}"#), r#"{"return": {}}"#, "{what}");
    let osinfo = agent.ask(r#"{"execute":"guest-get-osinfo"}"#);
    assert!(
        osinfo.contains(r#""name": "512-byte VM""#) && osinfo.contains(r#""id": "vm512""#),
        "{osinfo}"
    );
    assert_eq!(
        agent.ask(r#"{"execute":"guest-get-host-name"}"#),
        r#"{"return": {"host-name": "vm512-525400123456"}}"#,
        "{what}"
    );
    assert_eq!(
        agent.ask(r#"{"execute":"guest-get-timezone"}"#),
        r#"{"return": {"zone": "UTC", "offset": 0}}"#
    );
    for empty in ["guest-get-users", "guest-get-fsinfo", "guest-get-disks"] {
        assert_eq!(
            agent.ask(&format!(r#"{{"execute":"{empty}"}}"#)),
            r#"{"return": []}"#,
            "{empty}"
        );
    }
    let vcpus = agent.ask(r#"{"execute":"guest-get-vcpus"}"#);
    assert!(vcpus.contains(r#""logical-id": 0"#), "{what}: {vcpus}");

    // The clock: the RTC's time (QEMU gives the host's), then what guest-set-time set.
    let time = agent.ask(r#"{"execute":"guest-get-time"}"#);
    let ns: u128 = time
        .strip_prefix(r#"{"return": "#)
        .and_then(|t| t.strip_suffix('}'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{what}: guest-get-time: {time}"));
    let skew = ns.abs_diff(now_ns());
    assert!(skew < 120_000_000_000, "{what}: the VM's time is {skew} ns off");
    let set = 1_700_000_000_000_000_000u64;
    let answer =
        agent.ask(&format!(r#"{{"execute":"guest-set-time","arguments":{{"time":{set}}}}}"#));
    assert_eq!(answer, r#"{"return": {}}"#, "{what}");
    let time = agent.ask(r#"{"execute":"guest-get-time"}"#);
    let ns: u64 = time[r#"{"return": "#.len()..time.len() - 1].parse().unwrap();
    assert!((set..set + 60_000_000_000).contains(&ns), "{what}: after set-time: {time}");

    // Proxmox's backup: freeze, status, thaw.
    assert_eq!(agent.ask(r#"{"execute":"guest-fsfreeze-status"}"#), r#"{"return": "thawed"}"#);
    assert_eq!(agent.ask(r#"{"execute":"guest-fsfreeze-freeze"}"#), r#"{"return": 0}"#);
    assert_eq!(agent.ask(r#"{"execute":"guest-fsfreeze-status"}"#), r#"{"return": "frozen"}"#);
    assert_eq!(agent.ask(r#"{"execute":"guest-fsfreeze-thaw"}"#), r#"{"return": 0}"#);

    // The addresses, once DHCP has leased one (the line on COM1 says when).
    vm.wait_for(format!("{DEFAULT_MESSAGE} 10.0.2.15\r\n").as_bytes(), BOOT_TIMEOUT).unwrap();
    let interfaces = agent.ask(r#"{"execute":"guest-network-get-interfaces"}"#);
    for part in [
        r#"{"return": [{"name": "lo", "#.to_string(),
        format!(r#""hardware-address": "{MAC}""#),
        r#"{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}"#.to_string(),
        r#"{"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:fe12:3456", "prefix": 64}"#
            .to_string(),
    ] {
        assert!(interfaces.contains(&part), "{what}: no {part} in {interfaces}");
    }

    // Unknown commands, garbage, a 1 MiB line: an error each, and the agent goes on.
    let unknown = agent.ask(r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh"}}"#);
    assert!(unknown.starts_with(r#"{"error": {"class": "CommandNotFound", "desc": "#), "{unknown}");
    let garbage = agent.ask("this is no JSON");
    assert!(garbage.starts_with(r#"{"error": {"class": "GenericError""#), "{garbage}");
    agent.sync(77);
    let long =
        format!(r#"{{"execute":"guest-ping","arguments":{{"x":"{}"}}}}"#, "A".repeat(1 << 20));
    let answer = agent.ask(&long);
    assert!(answer.contains("JSON token size limit exceeded"), "{what}: 1 MiB line: {answer}");
    agent.sync(78);
    // A flood: 500 commands in one write, each answered, in order, nothing lost.
    const FLOOD: usize = 500;
    let flood: String = (0..FLOOD)
        .map(|i| format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{i}}}}}\n"))
        .collect();
    agent.send(flood.as_bytes());
    for i in 0..FLOOD {
        let answer = agent.line(REPLY_TIMEOUT);
        assert_eq!(answer, format!("{{\"return\": {i}}}").as_bytes(), "{what}: flood reply {i}");
    }

    // Proxmox: 0xFF, guest-sync-delimited and the command in one write; it skips to the 0xFF
    // before the sync's reply, then reads the command's.
    agent.send(
        b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":9321}}\n{\"execute\":\"guest-ping\"}\n",
    );
    let mut lines = Vec::new();
    while !lines.iter().any(|line: &Vec<u8>| line == b"{\"return\": {}}") {
        lines.push(agent.line(REPLY_TIMEOUT));
    }
    let delimited = lines.iter().position(|line| line == b"\xff{\"return\": 9321}");
    assert!(
        delimited == Some(lines.len() - 2),
        "{what}: Proxmox's pipeline answered {:?}",
        lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>()
    );

    // With the channel open and the client quiet the VM idles (the port's interrupt wakes
    // it, nothing else does), and COM1 still echoes.
    let share = qemu::cpu_shares(std::slice::from_mut(&mut vm), IDLE_WINDOW).unwrap()[0];
    assert!(share < IDLE_LIMIT, "{what}: {:.1}% of a core with the channel open", share * 100.0);
    vm.type_serial(b"agent?").unwrap();
    vm.wait_for(b"agent?", REPLY_TIMEOUT).unwrap();

    // guest-shutdown: no reply, the VM off within POWER_OFF_LIMIT (the lease given back first).
    assert_all_power_off_now(std::slice::from_mut(&mut vm), |_| {
        agent.send(br#"{"execute":"guest-shutdown"}"#);
        agent.send(b"\n");
    });
}

/// The net qcow2 under SeaBIOS on pc (IDE disk, e1000 on user networking).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn under_seabios_the_net_qcow2_answers_the_guest_agent_and_powers_off_on_its_shutdown() {
    assert_answers_the_agent(net_qcow2(Bus::Ide));
}

/// The net qcow2 under OVMF on q35 (virtio-blk disk first in the boot order, e1000e on user
/// networking).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn under_ovmf_the_net_qcow2_answers_the_guest_agent_and_powers_off_on_its_shutdown() {
    let [image, ..] = tools::ovmf_files().unwrap();
    let mut config = net_qcow2(Bus::VirtioBlk);
    config.machine = "q35".into();
    assert_answers_the_agent(config.under_uefi(Firmware::Uefi { image }));
}

fn net_qcow2(bus: Bus) -> VmConfig {
    let image = env_dir(crate::tasks::test::IMAGES_ENV).join(Family::Net.file_name(Format::Qcow2));
    tcg(Format::Qcow2.vm_config(&image, bus))
}

/// The PVH kernel on q35 with the agent's port but no card and no COM1 (`-nic none -serial
/// none`): the agent answers alone, reports `lo` only, and guest-shutdown powers the VM off.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn without_a_card_or_com1_the_net_kernel_answers_the_guest_agent_with_lo_alone() {
    let image = env_dir(crate::tasks::test::IMAGES_ENV).join(Family::Net.file_name(Format::Pvh));
    let mut config = tcg(VmConfig::new(&image, qemu::Boot::Kernel, "q35"));
    config.serial = qemu::Serial::None;
    let socket = qemu::socket_name("qga");
    config.extra.extend(qemu::agent_channel(&socket));
    let mut vm = Vm::start(&config).unwrap();
    let what = vm.description().to_string();
    let mut agent = Channel::new(qemu::connect(&socket, || Ok(())).unwrap(), &what);
    wait_for_open_port(&mut vm);
    agent.sync(1);
    let interfaces = agent.ask(r#"{"execute":"guest-network-get-interfaces"}"#);
    assert!(
        interfaces.starts_with(r#"{"return": [{"name": "lo", "#)
            && interfaces.ends_with(r#""hardware-address": "00:00:00:00:00:00"}]}"#),
        "{what}: {interfaces}"
    );
    assert_eq!(
        agent.ask(r#"{"execute":"guest-get-host-name"}"#),
        r#"{"return": {"host-name": "vm512"}}"#
    );
    assert_all_power_off_now(std::slice::from_mut(&mut vm), |_| {
        agent.send(b"{\"execute\":\"guest-shutdown\",\"arguments\":{\"mode\":\"powerdown\"}}\n");
    });
}
