//! The net family's figures for `cargo xtask bench` (and alone with `--net`): on private
//! networks the bench makes (`infra::netns`: a namespace, a bridge, dnsmasq), the time from
//! QEMU's start to the lease in dnsmasq's lease file and to the address line on COM1, under
//! SeaBIOS (the qcow2's loader), OVMF (the qcow2's UEFI program) and PVH (`-kernel`); the ping
//! round trip; idle with a card attached, beside a paused VM with the same card; and a farm of
//! VMs started at once on one bridge. Written to `target/bench/net.md` and `net.json`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::domain::formats::{Family, Format};
use crate::domain::image::{DEFAULT_MESSAGE, thousands};
use crate::domain::sizes::{self, Sizes};
use crate::infra::cargo;
use crate::infra::files::target_dir;
use crate::infra::netns::PrivateNetwork;
use crate::infra::process;
use crate::infra::qemu::{self, Accel, Boot, Bus, Firmware, IdleCost, VmConfig};
use crate::infra::tools::{self, Tool};
use crate::tasks::bench::{BenchOptions, Stats, cost_json, ms};

/// How long one lease may take before the bench gives up (OVMF under TCG takes the longest).
const LEASE_TIMEOUT: Duration = Duration::from_secs(120);
/// VMs started at once on one bridge.
pub const FARM: usize = 32;
/// Pings for the round trip.
const PINGS: u32 = 20;
/// From the lease to the idle window: the router's advertisements and SLAAC settle, and the
/// bridge's ARP and neighbour probes that follow the pings (Linux probes a neighbour 5 s
/// after traffic stops, 3 times a second apart) are over.
const SETTLE: Duration = Duration::from_secs(12);
/// The largest modules the report lists.
const MODULES_SHOWN: usize = 24;
/// The target: within this many wake-ups per second of the paused VM with the same card.
const WAKEUP_MARGIN: f64 = 1.0;

/// One way the net family boots.
#[derive(Clone, Copy, PartialEq)]
enum BootPath {
    SeaBios,
    Ovmf,
    Pvh,
}

impl BootPath {
    const ALL: [BootPath; 3] = [BootPath::SeaBios, BootPath::Ovmf, BootPath::Pvh];

    fn name(self) -> &'static str {
        match self {
            BootPath::SeaBios => "qcow2, SeaBIOS (loader sector), pc, e1000",
            BootPath::Ovmf => "qcow2, OVMF (UEFI program), q35, virtio-net",
            BootPath::Pvh => "kernel (-kernel, PVH), q35, virtio-net",
        }
    }

    /// The card, as QEMU names it.
    fn model(self) -> &'static str {
        match self {
            BootPath::SeaBios => "e1000",
            BootPath::Ovmf | BootPath::Pvh => "virtio-net-pci,disable-legacy=on",
        }
    }

    /// Where it runs: OVMF stops under this machine's nested KVM before printing (NOTES).
    fn runs_under(self, accel: Accel) -> bool {
        accel == Accel::Tcg || self != BootPath::Ovmf
    }

    fn config(self, images: &Path, ovmf: &Path, accel: Accel) -> VmConfig {
        let image = |format| images.join(Family::Net.file_name(format));
        let config = match self {
            BootPath::SeaBios => Format::Qcow2.vm_config(&image(Format::Qcow2), Bus::Ide),
            BootPath::Ovmf => {
                let mut config = Format::Qcow2.vm_config(&image(Format::Qcow2), Bus::VirtioBlk);
                config.machine = "q35".into();
                config.under_uefi(Firmware::Uefi { image: ovmf.to_path_buf() })
            }
            BootPath::Pvh => VmConfig::new(&image(Format::Pvh), Boot::Kernel, "q35"),
        };
        VmConfig { accel, label: Some(self.name().into()), ..config }
    }
}

/// The MAC of the bench's `n`th VM (each VM gets its own, so that each asks for a new lease).
fn mac(n: usize) -> String {
    format!("52:54:00:00:{:02x}:{:02x}", 0x10 + n / 256, n % 256)
}

/// Time to the lease and to the address line, over some runs of one path.
struct Lease {
    path: BootPath,
    accel: Accel,
    /// To the lease from a dnsmasq that does not ping the address first.
    unchecked: Stats,
    lease: Stats,
    line: Stats,
}

/// What a VM leased for the round trip and the idle window showed.
struct Answering {
    path: BootPath,
    /// The ping round trip: minimum, mean, maximum, in ms.
    rtt: [f64; 3],
    idle: IdleCost,
    /// Frames the bridge sent the VM during the idle window (its router's advertisements, the
    /// host's neighbour probes): each one wakes it, as it should.
    frames: u64,
}

/// The guest agent on one boot path: QEMU's start to the first answered guest-ping, and idle
/// with a client connected and quiet.
struct AgentFigures {
    path: BootPath,
    first_ping: Stats,
    idle: IdleCost,
}

/// The farm: `FARM` VMs at once on one bridge.
struct Farm {
    vms: usize,
    all_leased: Duration,
    idle_total: f64,
    mean_rss_kib: u64,
}

pub struct NetReport {
    leases: Vec<Lease>,
    answering: Vec<Answering>,
    paused: IdleCost,
    farm: Farm,
    window: Duration,
    agent: Vec<AgentFigures>,
    sizes: Sizes,
    /// The net kernel's file size.
    kernel: u64,
}

/// Measures it all. `images` holds both families (the bench's own build).
pub fn run(options: &BenchOptions, images: &Path) -> Result<NetReport> {
    tools::require(&[Tool::Dnsmasq, Tool::Ip, Tool::Ping])?;
    let [ovmf, ..] = tools::ovmf_files()?;
    let runs = if options.quick { 1 } else { 3 };
    let window = if options.quick { Duration::from_secs(5) } else { Duration::from_secs(10) };
    let mut next = 0;
    let mut fresh_mac = || {
        next += 1;
        mac(next)
    };

    // 1. QEMU's start to the lease, and to the address line; then to the lease again where
    // dnsmasq does not first ping the address (the VM's own part).
    let network = PrivateNetwork::create("bench-lease", true)?;
    let quick_server = PrivateNetwork::create_without_address_check("bench-noping")?;
    let mut leases = Vec::new();
    for accel in qemu::available_accels() {
        for path in BootPath::ALL.into_iter().filter(|path| path.runs_under(accel)) {
            println!("net: {runs} lease(s) of each kind, {} ({})", path.name(), accel.name());
            let mut times = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..runs {
                let config = path.config(images, &ovmf, accel);
                let (lease, line) = time_to_lease(&network, config.clone(), path, &fresh_mac())?;
                let (quick, _) = time_to_lease(&quick_server, config, path, &fresh_mac())?;
                for (list, time) in times.iter_mut().zip([quick, lease, line]) {
                    list.push(time);
                }
            }
            let [unchecked, lease, line] = times.map(|list| Stats::of(&list));
            leases.push(Lease { path, accel, unchecked, lease, line });
        }
    }
    drop(network);
    drop(quick_server);

    // 2. The round trip, then idle beside a paused VM with a card, on a quiet network (TCG:
    // what every host has, and what OVMF runs under here).
    println!("net: ping round trips and idle over {window:?}, beside a paused VM");
    let network = PrivateNetwork::create("bench-idle", true)?;
    let mut configs = Vec::new();
    let mut macs = Vec::new();
    for path in BootPath::ALL {
        let mut config = path.config(images, &ovmf, Accel::Tcg);
        let mac = fresh_mac();
        let tap = network.attach(&mut config, path.model(), &mac)?;
        configs.push((config, tap));
        macs.push(mac);
    }
    let mut paused = BootPath::Pvh.config(images, &ovmf, Accel::Tcg);
    let tap = network.attach(&mut paused, BootPath::Pvh.model(), &fresh_mac())?;
    let mut vms = network.start(&configs)?;
    let mut paused = qemu::start_all(&[paused])?;
    network.plug(&tap)?;
    let mut addresses = Vec::new();
    for (vm, mac) in vms.iter_mut().zip(&macs) {
        addresses.push(network.leased(vm, mac, DEFAULT_MESSAGE, LEASE_TIMEOUT)?);
    }
    let rtts: Vec<[f64; 3]> =
        addresses.iter().map(|address| network.ping_rtt(address, PINGS)).collect::<Result<_>>()?;
    thread::sleep(SETTLE);
    vms.append(&mut paused);
    let taps: Vec<&str> = configs.iter().map(|(_, tap)| tap.as_str()).collect();
    let frames = |network: &PrivateNetwork| -> Result<Vec<u64>> {
        taps.iter().map(|tap| network.frames_to(tap)).collect()
    };
    let before = frames(&network)?;
    let costs = qemu::idle_costs(&mut vms, window)?;
    let after = frames(&network)?;
    let answering = BootPath::ALL
        .into_iter()
        .zip(rtts)
        .zip(&costs)
        .zip(after.iter().zip(&before).map(|(a, b)| a - b))
        .map(|(((path, rtt), &idle), frames)| Answering { path, rtt, idle, frames })
        .collect();
    let paused = costs[BootPath::ALL.len()];
    drop(vms);
    drop(network);

    // 3. The farm: the PVH kernel on q35 (no firmware to wait for: the VMs' own time), all
    // started at once on one bridge.
    println!("net: {FARM} VMs at once on one bridge (tcg)");
    let network = PrivateNetwork::create("bench-farm", true)?;
    let mut configs = Vec::new();
    let mut macs = Vec::new();
    for _ in 0..FARM {
        let mut config = BootPath::Pvh.config(images, &ovmf, Accel::Tcg);
        let mac = fresh_mac();
        let tap = network.attach(&mut config, BootPath::Pvh.model(), &mac)?;
        configs.push((config, tap));
        macs.push(mac);
    }
    let start = Instant::now();
    let mut vms = network.start(&configs)?;
    for mac in &macs {
        network.wait_for_lease(mac, LEASE_TIMEOUT)?;
    }
    let all_leased = start.elapsed();
    thread::sleep(SETTLE);
    let idle_total = qemu::cpu_shares(&mut vms, window)?.iter().sum();
    let rss: Vec<u64> =
        vms.iter().map(|vm| process::resident_kib(vm.pid())).collect::<Result<_>>()?;
    let farm = Farm {
        vms: FARM,
        all_leased,
        idle_total,
        mean_rss_kib: rss.iter().sum::<u64>() / FARM as u64,
    };
    drop(vms);
    drop(network);

    // 4. The guest agent (no card): QEMU's start to the first answered guest-ping; then idle
    // with the channel open and the client quiet, the VMs together (tcg).
    println!("net: {runs} first guest-ping(s) on each boot path, then idle with the channel open");
    let mut agent = Vec::new();
    let mut open = Vec::new();
    for path in BootPath::ALL {
        let mut times = Vec::new();
        for run in 0..runs {
            let (time, vm, client) = first_ping(path.config(images, &ovmf, Accel::Tcg))?;
            times.push(time);
            if run + 1 == runs {
                open.push((vm, client));
            }
        }
        agent.push((path, Stats::of(&times)));
    }
    thread::sleep(Duration::from_secs(2));
    let mut vms: Vec<qemu::Vm> = Vec::new();
    let mut clients = Vec::new();
    for (vm, client) in open {
        vms.push(vm);
        clients.push(client);
    }
    let costs = qemu::idle_costs(&mut vms, window)?;
    let agent = agent
        .into_iter()
        .zip(costs)
        .map(|((path, first_ping), idle)| AgentFigures { path, first_ping, idle })
        .collect();
    drop(clients);
    drop(vms);

    // 5. Where the net kernel's bytes go.
    println!("net: the net kernel once more, with its symbols, for its size by crate and module");
    let elf = cargo::build_net_pvh_with_symbols()?;
    let sizes =
        sizes::of_elf(&fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?)?;
    let kernel = fs::metadata(images.join(Family::Net.file_name(Format::Pvh)))?.len();

    Ok(NetReport { leases, answering, paused, farm, window, agent, sizes, kernel })
}

/// Starts `config` with the guest agent's channel and asks guest-ping every 20 ms (QEMU holds
/// what is written before the guest opens the port) until the first answer: the time from
/// QEMU's start, the VM and the connected client.
fn first_ping(
    mut config: VmConfig,
) -> Result<(Duration, qemu::Vm, std::os::unix::net::UnixStream)> {
    use std::io::{Read, Write};
    let socket = qemu::socket_name("qga");
    config.extra.extend(qemu::agent_channel(&socket));
    let start = Instant::now();
    let mut vm = qemu::Vm::start(&config)?;
    let mut client = qemu::connect(&socket, || Ok(()))?;
    client.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut heard = Vec::new();
    loop {
        client.write_all(b"{\"execute\":\"guest-ping\"}\n")?;
        let mut buffer = [0u8; 512];
        match client.read(&mut buffer) {
            Ok(n) => heard.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading the agent's socket"),
        }
        const ANSWER: &[u8] = b"{\"return\": {}}";
        if heard.windows(ANSWER.len()).any(|w| w == ANSWER) {
            return Ok((start.elapsed(), vm, client));
        }
        vm.check_running()?;
        if start.elapsed() > LEASE_TIMEOUT {
            bail!("{}: no guest-ping answered within {LEASE_TIMEOUT:?}", vm.description());
        }
    }
}

/// Starts `config` with `path`'s card on `network` and MAC `mac`: from QEMU's start to the
/// lease in dnsmasq's file, and to the address line on COM1.
fn time_to_lease(
    network: &PrivateNetwork,
    mut config: VmConfig,
    path: BootPath,
    mac: &str,
) -> Result<(Duration, Duration)> {
    let tap = network.attach(&mut config, path.model(), mac)?;
    let start = Instant::now();
    let mut vms = network.start(&[(config, tap)])?;
    let lease = loop {
        if let Some(lease) = network.lease(mac) {
            break lease;
        }
        if start.elapsed() > LEASE_TIMEOUT {
            bail!("{}: no lease within {LEASE_TIMEOUT:?}", vms[0].description());
        }
        thread::sleep(Duration::from_millis(5));
    };
    let to_lease = start.elapsed();
    let line = format!("{DEFAULT_MESSAGE} {}\r\n", lease.address);
    vms[0].wait_for(line.as_bytes(), LEASE_TIMEOUT)?;
    Ok((to_lease, start.elapsed()))
}

impl NetReport {
    /// Whether `cost` is within the target of the paused VM's.
    fn at_floor(&self, cost: IdleCost) -> bool {
        cost.wakeups <= self.paused.wakeups + WAKEUP_MARGIN
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## The net family\n");
        let _ = writeln!(
            md,
            "On a private network (namespace, bridge, dnsmasq): QEMU's start to the lease in \
             dnsmasq's lease file, with dnsmasq's defaults (it first pings the address it will \
             offer, and offers it once no answer came) and with `--no-ping` (the VM's own part), \
             and to the address line on COM1 (defaults):\n"
        );
        let _ = writeln!(
            md,
            "| accelerator | boot path | lease, median | min | max | --no-ping, median | line, median | runs |"
        );
        let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for l in &self.leases {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                l.accel.name(),
                l.path.name(),
                ms(l.lease.median),
                ms(l.lease.min),
                ms(l.lease.max),
                ms(l.unchecked.median),
                ms(l.line.median),
                l.lease.runs
            );
        }
        let _ = writeln!(
            md,
            "\nPing round trips ({PINGS} pings) and idle over {:?} on a quiet network, beside a \
             paused VM with a card (tcg):\n",
            self.window
        );
        let _ = writeln!(
            md,
            "| boot path | rtt min | mean | max | CPU (% of a core) | wake-ups per second | frames to it | within 1/s of the paused VM |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for a in &self.answering {
            let _ = writeln!(
                md,
                "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.3}% | {:.1} | {} | {} |",
                a.path.name(),
                a.rtt[0],
                a.rtt[1],
                a.rtt[2],
                a.idle.cpu * 100.0,
                a.idle.wakeups,
                a.frames,
                if self.at_floor(a.idle) { "met" } else { "missed" }
            );
        }
        let _ = writeln!(
            md,
            "| paused VM with a card (floor) | - | - | - | {:.3}% | {:.1} | - | - |",
            self.paused.cpu * 100.0,
            self.paused.wakeups
        );
        let f = &self.farm;
        let _ = writeln!(
            md,
            "\n{} net kernels (q35, virtio-net) started at once on one bridge (tcg): all leased \
             after {}; idle together {:.2}% of a core; {} KiB resident per QEMU on average.",
            f.vms,
            ms(f.all_leased),
            f.idle_total * 100.0,
            thousands(f.mean_rss_kib)
        );
        let _ = writeln!(
            md,
            "\nThe guest agent (a virtserialport named org.qemu.guest_agent.0, no card, tcg): \
             QEMU's start to the first answered guest-ping; then idle with a client connected \
             and quiet, over {:?}, beside the paused VM above:\n",
            self.window
        );
        let _ = writeln!(
            md,
            "| boot path | first guest-ping, median | min | max | CPU (% of a core) | wake-ups per second | within 1/s of the paused VM |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | --- |");
        for a in &self.agent {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.3}% | {:.1} | {} |",
                a.path.name().split(", ").take(2).collect::<Vec<_>>().join(", "),
                ms(a.first_ping.median),
                ms(a.first_ping.min),
                ms(a.first_ping.max),
                a.idle.cpu * 100.0,
                a.idle.wakeups,
                if self.at_floor(a.idle) { "met" } else { "missed" }
            );
        }
        let z = &self.sizes;
        let _ = writeln!(
            md,
            "\nThe net kernel ({} bytes) by crate and by module: the sizes of its functions and \
             objects after LTO (code inlined into a caller counts as the caller's), {} bytes in \
             all; the rest is headers, alignment and unnamed data.\n",
            thousands(self.kernel),
            thousands(z.total)
        );
        let _ = writeln!(md, "| crate | bytes |\n| --- | ---: |");
        for (name, size) in &z.crates {
            let _ = writeln!(md, "| {name} | {} |", thousands(*size));
        }
        let _ = writeln!(md, "\n| module | bytes |\n| --- | ---: |");
        for (name, size) in z.modules.iter().take(MODULES_SHOWN) {
            let _ = writeln!(md, "| {name} | {} |", thousands(*size));
        }
        md
    }

    pub fn json(&self) -> String {
        let leases: Vec<String> = self
            .leases
            .iter()
            .map(|l| {
                format!(
                    r#"{{"accelerator": "{}", "path": "{}", "to_lease_no_ping": {}, "to_lease": {}, "to_line": {}}}"#,
                    l.accel.name(),
                    l.path.name(),
                    l.unchecked.json(),
                    l.lease.json(),
                    l.line.json()
                )
            })
            .collect();
        let answering: Vec<String> = self
            .answering
            .iter()
            .map(|a| {
                format!(
                    r#"{{"path": "{}", "rtt_ms": [{:.3}, {:.3}, {:.3}], "idle": {}, "frames_to_it": {}}}"#,
                    a.path.name(),
                    a.rtt[0],
                    a.rtt[1],
                    a.rtt[2],
                    cost_json(a.idle),
                    a.frames
                )
            })
            .collect();
        let agent: Vec<String> = self
            .agent
            .iter()
            .map(|a| {
                format!(
                    r#"{{"path": "{}", "first_guest_ping": {}, "idle": {}}}"#,
                    a.path.name(),
                    a.first_ping.json(),
                    cost_json(a.idle)
                )
            })
            .collect();
        let f = &self.farm;
        let sized = |list: &[(String, u64)]| {
            let items: Vec<String> =
                list.iter().map(|(name, size)| format!(r#"["{name}", {size}]"#)).collect();
            items.join(", ")
        };
        format!(
            r#"{{"leases": [{}], "answering": [{}], "agent": [{}], "paused_with_card": {}, "farm": {{"vms": {}, "all_leased_ms": {:.1}, "idle_core_share": {:.6}, "mean_rss_kib": {}}}, "kernel_bytes": {}, "by_crate": [{}], "by_module": [{}]}}"#,
            leases.join(", "),
            answering.join(", "),
            agent.join(", "),
            cost_json(self.paused),
            f.vms,
            f.all_leased.as_secs_f64() * 1000.0,
            f.idle_total,
            f.mean_rss_kib,
            self.kernel,
            sized(&self.sizes.crates),
            sized(&self.sizes.modules)
        )
    }

    /// Writes `target/bench/net.md` and `net.json`.
    pub fn write(&self) -> Result<()> {
        let dir = target_dir().join("bench");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("net.md"), self.markdown())?;
        fs::write(dir.join("net.json"), self.json())?;
        Ok(())
    }
}
