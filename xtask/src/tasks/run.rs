//! `cargo xtask run`: build one format and boot it in QEMU for a person to watch.
//!
//! Ctrl-C presses the ACPI power button (QMP `system_powerdown`), as `virsh shutdown` would;
//! `run` ends when the VM has powered itself off, and stops QEMU (exiting non-zero) only if it
//! has not within [`GRACE`], or at a second Ctrl-C. SIGTERM and SIGHUP stop QEMU at once.

use std::io::IsTerminal;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::domain::artifacts::{self, ImageOptions};
use crate::domain::formats::{Family, Format};
use std::ops::DerefMut;

use crate::infra::guest::Guest;
use crate::infra::process;
use crate::infra::qemu::{self, Accel, Bus, Firmware, Vm};
use crate::infra::tools::{self, Tool};
use crate::infra::{cloud_hypervisor, firecracker};

/// The CPU model `run` gives QEMU under KVM.
const KVM_CPU: &str = "host,-arch-capabilities";

/// How long the VM gets to power off after the power button before QEMU is stopped.
const GRACE: Duration = Duration::from_secs(5);

/// What `run` boots.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub format: Format,
    pub message: String,
    /// The controller asked for; `None`: IDE for disks and CDs.
    pub bus: Option<Bus>,
    /// Boot under OVMF (UEFI) rather than SeaBIOS.
    pub uefi: bool,
    /// The QEMU machine for the PVH kernel; `None`: `microvm`.
    pub machine: Option<String>,
    /// The VMM that boots the PVH kernel.
    pub vmm: Vmm,
    /// The net family's program, with a network card on QEMU's user networking.
    pub net: bool,
}

/// The VMMs `run` boots the PVH kernel with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Qemu,
    CloudHypervisor,
    Firecracker,
}

impl Vmm {
    pub const ALL: [Vmm; 3] = [Vmm::Qemu, Vmm::CloudHypervisor, Vmm::Firecracker];

    pub fn name(self) -> &'static str {
        match self {
            Vmm::Qemu => "qemu",
            Vmm::CloudHypervisor => "cloud-hypervisor",
            Vmm::Firecracker => "firecracker",
        }
    }

    pub fn parse(name: &str) -> Result<Vmm> {
        match Vmm::ALL.into_iter().find(|vmm| vmm.name() == name) {
            Some(vmm) => Ok(vmm),
            None => {
                let names: Vec<_> = Vmm::ALL.iter().map(|v| v.name()).collect();
                bail!("unknown VMM `{name}`; valid VMMs: {}", names.join(", "))
            }
        }
    }
}

impl RunOptions {
    /// The bus to boot from, or an error with the fix when this format cannot boot from it.
    pub fn bus(&self) -> Result<Bus> {
        let format = self.format;
        if format == Format::ContainerDisk {
            bail!(
                "containerdisk is a container image for KubeVirt, not a disk QEMU boots: run \
                 --format qcow2, the disk inside it"
            );
        }
        if self.uefi && matches!(format, Format::Raw | Format::Rom) {
            bail!(
                "{} boots under BIOS only ({}); under --uefi run --format img (or any disk \
                 format, or iso)",
                format.name(),
                match format {
                    Format::Raw => "the bare sector has no EFI System Partition",
                    _ => "it is BIOS firmware itself",
                }
            );
        }
        if format != Format::Pvh && (self.machine.is_some() || self.vmm != Vmm::Qemu) {
            bail!(
                "--machine and --vmm choose where the PVH kernel boots; {} boots on the machine \
                 its bus gives (see --bus): run --format pvh, or leave them out",
                format.name()
            );
        }
        if format == Format::Pvh && self.uefi {
            bail!(
                "pvh is a kernel the VMM enters directly, with no firmware to choose: leave out --uefi"
            );
        }
        if self.net && !Family::Net.has(format) {
            bail!(
                "the net family has no {} (a bare sector or a 64 KiB ROM holds no network \
                 stack): run --net --format pvh, qcow2, iso or any disk format",
                format.name()
            );
        }
        if self.net && self.vmm != Vmm::Qemu {
            bail!("--net boots on QEMU (with user networking): leave out --vmm");
        }
        if format == Format::Pvh && self.vmm != Vmm::Qemu && self.machine.is_some() {
            bail!("--machine picks a QEMU machine; {} has its own: leave it out", self.vmm.name());
        }
        if format == Format::Efi {
            bail!(
                "efi is the UEFI program alone, for an EFI System Partition of your own; every \
                 disk format and the ISO carry it: run --format img"
            );
        }
        let Some(bus) = self.bus else { return Ok(Bus::Ide) };
        if format.buses().contains(&bus) {
            return Ok(bus);
        }
        let fix = match format {
            Format::Rom => bail!(
                "rom is firmware: QEMU runs it as -bios, from no disk bus; leave out --bus {}",
                bus.name()
            ),
            Format::Pvh => bail!(
                "pvh is a kernel the VMM loads itself, from no disk bus; leave out --bus {} (use \
                 --machine or --vmm)",
                bus.name()
            ),
            Format::Raw => format!(
                "the bare 512-byte sector is less than one disk cylinder, which only IDE accepts; \
                 use --format img (the same sector padded to 1 MiB) on {}",
                bus.name()
            ),
            Format::Iso => "a CD needs a CD drive, which virtio-blk has not; use --bus ide or \
                            --bus ahci"
                .to_string(),
            _ => "see `cargo xtask help run`".to_string(),
        };
        let buses: Vec<_> = format.buses().iter().map(|b| b.name()).collect();
        bail!(
            "{} does not boot from {} (it boots from {}): {fix}",
            format.name(),
            bus.name(),
            buses.join(", ")
        )
    }
}

pub fn run(options: &RunOptions) -> Result<()> {
    // Everything that can be refused is refused before anything is built or started.
    let bus = options.bus()?;
    if options.vmm != Vmm::Qemu {
        return run_elsewhere(options);
    }
    let (accel, why) = Accel::choose()?;
    let mut needed = vec![Tool::Qemu];
    if options.uefi {
        needed.push(Tool::Ovmf);
    }
    if options.format.qemu_img_args().is_some() {
        needed.push(Tool::QemuImg);
    }
    tools::require(&needed)?;
    let (display, note) = choose_display();
    let family = if options.net { Family::Net } else { Family::Classic };
    let image = ImageOptions {
        message: options.message.clone(),
        formats: vec![options.format],
        families: vec![family],
    };
    let built = artifacts::build(&image, &artifacts::run_dir())?;
    print!("{}", built.report());
    let path: PathBuf = built
        .artifacts
        .iter()
        .chain(&built.net_artifacts)
        .next()
        .context("no format to boot")?
        .1
        .clone();

    let mut config = options.format.vm_config(&path, bus);
    config.accel = accel;
    if accel == Accel::Kvm {
        // QEMU's default model asks for features a (nested) host may lack and warns before the
        // VM's first line ("host doesn't support requested feature: CPUID.01H:ECX.pni"): the
        // host's own CPU, less the one MSR nested KVM refuses (QEMU 7.2 aborts on it).
        config.cpu = Some(KVM_CPU.to_string());
    }
    if options.uefi {
        let [image, ..] = tools::ovmf_files()?;
        config = config.under_uefi(Firmware::Uefi { image });
    }
    if let Some(machine) = &options.machine {
        config.machine = machine.clone();
    } else if options.net && options.format == Format::Pvh {
        config.machine = "q35".into();
    }
    let mut forwarded = None;
    if options.net {
        // A free port on this host for the VM's web page (QEMU takes it over at once).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        config.nic = Some(qemu::Nic {
            model: None,
            backend: qemu::NetBackend::User { forward_to: Some(port) },
            mac: None,
        });
        forwarded = Some(port);
    }
    // microvm has no graphics: its window would stay black.
    let display = display.filter(|_| config.machine != "microvm");
    config.display = display.map(str::to_string);
    let how = match options.format {
        Format::Rom => format!("as the firmware (-bios, {})", config.machine),
        Format::Pvh => format!("as a kernel (-kernel, {})", config.machine),
        _ => format!(
            "on {} ({}{})",
            bus.name(),
            config.machine,
            if options.uefi { ", UEFI firmware OVMF" } else { "" }
        ),
    };
    let accel = match accel {
        Accel::Kvm => format!("KVM ({why})"),
        Accel::Tcg => format!("TCG software emulation ({why})"),
    };
    if let Some(note) = note {
        println!("{note}");
    }
    match display {
        Some(backend) => println!(
            "booting {} {how} in a QEMU window ({backend}) with {accel}; COM1 is shown here too.",
            options.format.name()
        ),
        None => {
            println!("booting {} {how} in QEMU with {accel}; COM1 below.", options.format.name())
        }
    }
    println!(
        "To stop: Ctrl-C presses the ACPI power button (graceful shutdown; twice stops QEMU), \
         or Ctrl-D at the start of a line powers the VM off. Lines you type go to COM1, and the \
         VM echoes them back."
    );
    if let (Some(port), Some(nic)) = (forwarded, &config.nic) {
        println!(
            "Network: {} on QEMU's user networking; the VM leases 10.0.2.15, and its web page is \
             http://127.0.0.1:{port}/ (try `curl http://127.0.0.1:{port}/`).",
            nic.model_on(&config.machine)
        );
    }
    println!("----");

    // Before QEMU starts: it makes the terminal non-blocking.
    let _terminal = TerminalMode::save();
    process::count_interrupts();
    let mut vm = match Vm::start_with(&config, qemu::Console::Terminal) {
        Ok(vm) => vm,
        Err(error) if config.display.is_some() => {
            println!("the QEMU window did not open ({error:#}); booting in this terminal instead");
            config.display = None;
            Vm::start_with(&config, qemu::Console::Terminal)?
        }
        Err(error) => return Err(error),
    };
    let keyboard = read_keyboard();
    let mut pressed: Option<Instant> = None;
    loop {
        while let Ok(keys) = keyboard.try_recv() {
            // QEMU may be on its way out; its exit is reported below.
            let _ = vm.type_serial(&keys);
        }
        if let Some((status, _)) = vm.wait_exit(Duration::from_millis(50))? {
            println!();
            return match (status.success(), vm.guest_shut_down()) {
                (true, true) => {
                    println!("---- {}: the VM powered itself off", vm.description());
                    Ok(())
                }
                (true, false) => Ok(()),
                (false, _) => bail!("QEMU exited with {status}{}", vm.stderr_note()),
            };
        }
        match (process::interrupts(), pressed) {
            (0, _) => {}
            (1, None) => {
                println!(
                    "\r\n---- power button pressed; waiting up to {GRACE:?} for the VM to power off"
                );
                vm.qmp("system_powerdown")?;
                pressed = Some(Instant::now());
            }
            (1, Some(at)) if at.elapsed() < GRACE => {}
            (1, Some(_)) => {
                drop(vm); // stops QEMU
                bail!(
                    "the VM did not power off within {GRACE:?} of the power button: QEMU was stopped"
                );
            }
            (_, _) => {
                drop(vm);
                bail!("Ctrl-C pressed twice: QEMU was stopped");
            }
        }
    }
}

/// Boots the PVH kernel on Cloud Hypervisor or Firecracker (found on PATH; both need KVM): COM1
/// shown here, what is typed sent to it, Ctrl-C as the graceful stop (CH's ACPI power button,
/// Firecracker's Ctrl-Alt-Del).
fn run_elsewhere(options: &RunOptions) -> Result<()> {
    let (name, found) = match options.vmm {
        Vmm::CloudHypervisor => ("cloud-hypervisor (with ch-remote)", cloud_hypervisor::binary()),
        _ => ("firecracker", firecracker::binary()),
    };
    if found.is_none() {
        bail!(
            "{name} is not on PATH: it is no Debian package; build it from its repository \
             (`cargo build --release`) and put the binary on PATH"
        );
    }
    qemu::kvm_usable().map_err(|why| anyhow::anyhow!("{} needs KVM: {why}", options.vmm.name()))?;
    let image = ImageOptions {
        message: options.message.clone(),
        formats: vec![Format::Pvh],
        ..ImageOptions::default()
    };
    let built = artifacts::build(&image, &artifacts::run_dir())?;
    print!("{}", built.report());
    let path = built.artifacts.first().context("no kernel to boot")?.1.clone();
    println!("booting pvh on {}; COM1 below.", options.vmm.name());
    println!(
        "To stop: Ctrl-C asks the VM to stop (twice stops the VMM), or Ctrl-D at the start of a \
         line powers it off. Lines you type go to COM1, and the VM echoes them back."
    );
    println!("----");
    process::count_interrupts();
    match options.vmm {
        Vmm::CloudHypervisor => watch(cloud_hypervisor::ChVm::start(&path)?),
        _ => watch(firecracker::FcVm::start(&path)?),
    }
}

/// What `run` needs of a VM on another VMM, beyond what every launcher's VM has ([`Guest`]).
trait Stoppable: DerefMut<Target = Guest> {
    fn type_on_com1(&mut self, bytes: &[u8]) -> Result<()>;
    /// The platform's graceful stop.
    fn stop(&mut self) -> Result<()>;
}

impl Stoppable for cloud_hypervisor::ChVm {
    fn type_on_com1(&mut self, bytes: &[u8]) -> Result<()> {
        self.type_serial(bytes)
    }

    fn stop(&mut self) -> Result<()> {
        self.power_button()
    }
}

impl Stoppable for firecracker::FcVm {
    fn type_on_com1(&mut self, bytes: &[u8]) -> Result<()> {
        self.type_serial(bytes)
    }

    fn stop(&mut self) -> Result<()> {
        self.power_button()
    }
}

/// Shows COM1 as it comes, types what is typed, and stops the VM gracefully on Ctrl-C.
fn watch(mut vm: impl Stoppable) -> Result<()> {
    let keyboard = read_keyboard();
    let mut shown = 0;
    let mut pressed: Option<Instant> = None;
    loop {
        let output = vm.serial_output();
        if output.len() > shown {
            let mut stdout = std::io::stdout();
            std::io::Write::write_all(&mut stdout, &output[shown..])?;
            std::io::Write::flush(&mut stdout)?;
            shown = output.len();
        }
        while let Ok(keys) = keyboard.try_recv() {
            let _ = vm.type_on_com1(&keys);
        }
        if let Some((status, _)) = vm.wait_exit(Duration::from_millis(50))? {
            println!();
            if !status.success() {
                bail!("{} exited with {status}", vm.description());
            }
            println!("---- {}: the VM stopped itself", vm.description());
            return Ok(());
        }
        match (process::interrupts(), pressed) {
            (0, _) => {}
            (1, None) => {
                println!("\r\n---- asked to stop; waiting up to {GRACE:?}");
                vm.stop()?;
                pressed = Some(Instant::now());
            }
            (1, Some(at)) if at.elapsed() < GRACE => {}
            (1, Some(_)) => bail!("the VM did not stop within {GRACE:?}: the VMM was stopped"),
            (_, _) => bail!("Ctrl-C pressed twice: the VMM was stopped"),
        }
    }
}

/// Reads this terminal on a thread; the bytes are for the VM's COM1 (typed by the main loop). A
/// terminal in line mode turns Ctrl-D into an end of input rather than a byte: that end is sent
/// on as the byte (0x04), which powers the VM off. (Stdin that is no terminal, such as
/// /dev/null, just ends.)
fn read_keyboard() -> mpsc::Receiver<Vec<u8>> {
    let (keys, typed) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let terminal = stdin.is_terminal();
        let mut chunk = [0u8; 256];
        loop {
            let bytes = match std::io::Read::read(&mut stdin, &mut chunk) {
                Ok(0) if terminal => vec![CTRL_D],
                Ok(n @ 1..) => chunk[..n].to_vec(),
                // QEMU makes its stdout non-blocking, and on a terminal that is our stdin too
                // (one open terminal): nothing typed yet.
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                _ => break,
            };
            if keys.send(bytes).is_err() {
                break;
            }
        }
    });
    typed
}

/// The terminal's file status flags, put back when `run` ends: QEMU leaves the terminal it shares
/// with us non-blocking, which would break the shell's next read.
struct TerminalMode {
    flags: Option<i32>,
}

impl TerminalMode {
    fn save() -> TerminalMode {
        // SAFETY: F_GETFL on our standard input only reads its flags.
        let flags = unsafe { libc::fcntl(0, libc::F_GETFL) };
        TerminalMode { flags: (flags >= 0).then_some(flags) }
    }
}

impl Drop for TerminalMode {
    fn drop(&mut self) {
        if let Some(flags) = self.flags {
            // SAFETY: F_SETFL with the flags read before.
            unsafe { libc::fcntl(0, libc::F_SETFL, flags) };
        }
    }
}

/// Ctrl-D: the byte that powers the VM off from COM1.
const CTRL_D: u8 = 0x04;

/// The window's display backend, or none (this terminal), with a note when a display was set
/// but cannot be used. Never leaves the choice to QEMU: built without GTK and SDL, it would
/// start a VNC server instead.
fn choose_display() -> (Option<&'static str>, Option<String>) {
    let x11 = std::env::var("DISPLAY").ok().filter(|v| !v.is_empty());
    let wayland = std::env::var("WAYLAND_DISPLAY").ok().filter(|v| !v.is_empty());
    if x11.is_none() && wayland.is_none() {
        return (None, None);
    }
    let reachable = x11.as_deref().is_some_and(x11_reachable)
        || wayland.as_deref().is_some_and(wayland_reachable);
    if !reachable {
        let set: Vec<String> = [("DISPLAY", &x11), ("WAYLAND_DISPLAY", &wayland)]
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
            .collect();
        return (
            None,
            Some(format!(
                "{} is set, but no display server answers there: using this terminal",
                set.join(" and ")
            )),
        );
    }
    let backends = qemu::display_backends().unwrap_or_default();
    match ["gtk", "sdl"].into_iter().find(|b| backends.iter().any(|have| have == b)) {
        Some(backend) => (Some(backend), None),
        None => (
            None,
            Some(
                "this QEMU has no GTK or SDL display (Debian/Ubuntu: install qemu-system-gui): \
                 using this terminal"
                    .to_string(),
            ),
        ),
    }
}

/// Whether an X server answers at `display` (`:0`, `:1.0`, `localhost:10.0`).
fn x11_reachable(display: &str) -> bool {
    let Some((host, rest)) = display.rsplit_once(':') else { return false };
    let Ok(number) = rest.split('.').next().unwrap_or("").parse::<u16>() else { return false };
    if host.is_empty() || host == "unix" {
        return UnixStream::connect(format!("/tmp/.X11-unix/X{number}")).is_ok();
    }
    let Ok(mut addresses) = (host, 6000 + number).to_socket_addrs() else { return false };
    addresses
        .any(|address| TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok())
}

/// Whether a Wayland compositor answers at `display` (a name under `$XDG_RUNTIME_DIR`, or a path).
fn wayland_reachable(display: &str) -> bool {
    let path = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !display.starts_with('/') => PathBuf::from(dir).join(display),
        _ => PathBuf::from(display),
    };
    UnixStream::connect(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus_for(format: Format, bus: Option<Bus>) -> Result<Bus, String> {
        RunOptions {
            format,
            message: String::new(),
            bus,
            uefi: false,
            machine: None,
            vmm: Vmm::Qemu,
            net: false,
        }
        .bus()
        .map_err(|e| e.to_string())
    }

    #[test]
    fn combinations_that_cannot_boot_are_refused_with_the_fix() {
        assert_eq!(bus_for(Format::Raw, None), Ok(Bus::Ide));
        assert_eq!(bus_for(Format::Qcow2, Some(Bus::VirtioScsi)), Ok(Bus::VirtioScsi));
        let error = bus_for(Format::Raw, Some(Bus::Ahci)).unwrap_err();
        assert!(
            error.contains("raw does not boot from ahci") && error.contains("--format img"),
            "{error}"
        );
        assert!(bus_for(Format::Raw, Some(Bus::VirtioBlk)).unwrap_err().contains("--format img"));
        let error = bus_for(Format::Iso, Some(Bus::VirtioBlk)).unwrap_err();
        assert!(error.contains("CD drive") && error.contains("--bus ide"), "{error}");
        let error = bus_for(Format::Rom, Some(Bus::VirtioScsi)).unwrap_err();
        assert!(error.contains("rom is firmware"), "{error}");
        assert_eq!(bus_for(Format::Iso, Some(Bus::Ahci)), Ok(Bus::Ahci));
        assert!(bus_for(Format::ContainerDisk, None).unwrap_err().contains("--format qcow2"));
        assert!(bus_for(Format::Efi, None).unwrap_err().contains("--format img"));
    }

    #[test]
    fn under_uefi_the_bios_only_formats_are_refused() {
        let uefi = |format| RunOptions {
            format,
            message: String::new(),
            bus: None,
            uefi: true,
            machine: None,
            vmm: Vmm::Qemu,
            net: false,
        };
        for format in [Format::Raw, Format::Rom] {
            let error = uefi(format).bus().unwrap_err().to_string();
            assert!(error.contains("BIOS only") && error.contains("--format img"), "{error}");
        }
        for format in [Format::Img, Format::Vhd, Format::Iso] {
            assert_eq!(uefi(format).bus().unwrap(), Bus::Ide);
        }
    }

    #[test]
    fn the_net_family_runs_as_its_kernel_on_pc_q35_and_microvm() {
        let net = |format, machine: Option<&str>| RunOptions {
            format,
            message: String::new(),
            bus: None,
            uefi: false,
            machine: machine.map(str::to_string),
            vmm: Vmm::Qemu,
            net: true,
        };
        assert!(net(Format::Pvh, None).bus().is_ok());
        assert!(net(Format::Pvh, Some("pc")).bus().is_ok());
        // microvm's card is virtio-net on virtio-mmio.
        assert!(net(Format::Pvh, Some("microvm")).bus().is_ok());
        let error = net(Format::Rom, None).bus().unwrap_err().to_string();
        assert!(error.contains("run --net --format pvh, qcow2"), "{error}");
        assert!(net(Format::Qcow2, None).bus().is_ok());
        assert!(net(Format::Efi, None).bus().unwrap_err().to_string().contains("--format img"));
    }

    #[test]
    fn a_display_nobody_answers_is_not_reachable() {
        assert!(!x11_reachable(":987"));
        assert!(!x11_reachable("garbage"));
        assert!(!wayland_reachable("/nonexistent/wayland-9"));
    }
}
