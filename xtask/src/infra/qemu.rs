//! The one QEMU launcher, used by `run`, the boot tests and the benchmarks.
//!
//! A [`Vm`] owns its QEMU process (a guarded child: see `process.rs`) and kills it when dropped,
//! on success, failure or panic alike. COM1 is QEMU's stdin and stdout, collected by a reader
//! thread; QMP, QEMU's control protocol, runs over a Linux abstract socket, so no socket file is
//! ever left behind and no path (with its commas or its length) is involved.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::infra::process::{self, Guarded};
use crate::infra::tools::{self, Tool};

/// Environment variable that forces an accelerator: `VM512_ACCEL=tcg cargo xtask test`.
pub const ACCEL_ENV: &str = "VM512_ACCEL";

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// `VM512_ACCEL` (`kvm` or `tcg`) when set; otherwise KVM when `/dev/kvm` can be opened for
    /// reading and writing, TCG when not. Returns the choice and why it was made; refuses any
    /// other value of `VM512_ACCEL`, and `kvm` where KVM cannot be used.
    pub fn choose() -> Result<(Accel, String)> {
        Accel::choose_from(&std::env::var(ACCEL_ENV).unwrap_or_default(), kvm_usable())
    }

    fn choose_from(forced: &str, kvm: Result<(), String>) -> Result<(Accel, String)> {
        match (forced, kvm) {
            ("tcg", _) => Ok((Accel::Tcg, format!("{ACCEL_ENV}=tcg"))),
            ("kvm", Ok(())) => Ok((Accel::Kvm, format!("{ACCEL_ENV}=kvm"))),
            ("kvm", Err(why)) => bail!("{ACCEL_ENV}=kvm, but {why}; unset it to use TCG"),
            ("", Ok(())) => Ok((Accel::Kvm, "/dev/kvm is usable".into())),
            ("", Err(why)) => Ok((Accel::Tcg, why)),
            (other, _) => bail!(
                "{ACCEL_ENV} must be `kvm` or `tcg`, not `{other}`; unset it to use KVM when \
                 /dev/kvm is usable and TCG otherwise"
            ),
        }
    }

    /// The accelerator [`Accel::choose`] picks; TCG if `VM512_ACCEL` is invalid (the tasks
    /// refuse that before starting any VM).
    pub fn default_choice() -> Accel {
        Accel::choose().map_or(Accel::Tcg, |(accel, _)| accel)
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// TCG always; KVM too when this machine can use it.
pub fn available_accels() -> Vec<Accel> {
    let mut accels = vec![Accel::Tcg];
    if kvm_usable().is_ok() {
        accels.push(Accel::Kvm);
    }
    accels
}

/// Whether this user can use KVM, and if not, why.
pub fn kvm_usable() -> Result<(), String> {
    match fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("no usable /dev/kvm ({error})")),
    }
}

/// The disk controllers hypervisors attach boot disks to: every one SeaBIOS boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// PIIX IDE, the `pc` machine's own controller (Hyper-V generation 1 too).
    Ide,
    /// AHCI (SATA): the `q35` machine's own ICH9 controller; on `pc` an added one (VirtualBox).
    Ahci,
    /// virtio-blk-pci (OpenStack, KubeVirt).
    VirtioBlk,
    /// virtio-scsi-pci with a scsi-hd / scsi-cd (oVirt, Proxmox).
    VirtioScsi,
    /// NVMe.
    Nvme,
    /// LSI 53C895A SCSI (VMware's "LSI Logic Parallel" family; Proxmox's lsi).
    Lsi,
    /// VMware paravirtual SCSI.
    Pvscsi,
    /// LSI MegaRAID SAS.
    Megasas,
    /// LSI SAS1068 (VMware's "LSI Logic SAS").
    Mptsas,
    /// USB mass storage on an xHCI (USB 3) controller.
    UsbXhci,
    /// USB mass storage on an EHCI (USB 2) controller.
    UsbEhci,
    /// The ISA floppy drive.
    Floppy,
}

impl Bus {
    pub const ALL: [Bus; 12] = [
        Bus::Ide,
        Bus::Ahci,
        Bus::VirtioBlk,
        Bus::VirtioScsi,
        Bus::Nvme,
        Bus::Lsi,
        Bus::Pvscsi,
        Bus::Megasas,
        Bus::Mptsas,
        Bus::UsbXhci,
        Bus::UsbEhci,
        Bus::Floppy,
    ];

    /// The controllers with a CD drive.
    pub const CD_DRIVES: [Bus; 9] = [
        Bus::Ide,
        Bus::Ahci,
        Bus::VirtioScsi,
        Bus::Lsi,
        Bus::Pvscsi,
        Bus::Megasas,
        Bus::Mptsas,
        Bus::UsbXhci,
        Bus::UsbEhci,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Ahci => "ahci",
            Bus::VirtioBlk => "virtio-blk",
            Bus::VirtioScsi => "virtio-scsi",
            Bus::Nvme => "nvme",
            Bus::Lsi => "lsi",
            Bus::Pvscsi => "pvscsi",
            Bus::Megasas => "megasas",
            Bus::Mptsas => "mptsas",
            Bus::UsbXhci => "usb-xhci",
            Bus::UsbEhci => "usb-ehci",
            Bus::Floppy => "floppy",
        }
    }

    /// The machine whose built-in controller this is (`q35` for AHCI); `pc` for the others.
    pub fn machine(self) -> &'static str {
        match self {
            Bus::Ahci => "q35",
            _ => "pc",
        }
    }

    /// The `-device` arguments that attach the drive `boot` (a CD where `cd`) on `machine`.
    fn devices(self, machine: &str, cd: bool) -> Vec<String> {
        let (ide, scsi) = if cd { ("ide-cd", "scsi-cd") } else { ("ide-hd", "scsi-hd") };
        let one = |device: String| vec![device];
        let behind = |controller: &str, device: &str| {
            vec![
                format!("{controller},id=hba"),
                format!("{device},drive=boot,bus=hba.0,bootindex=1"),
            ]
        };
        let q35 = machine.starts_with("q35");
        match self {
            // IDE on pc, the built-in AHCI on q35: both take ide-hd / ide-cd.
            Bus::Ide => one(format!("{ide},drive=boot,bootindex=1")),
            Bus::Ahci if q35 => one(format!("{ide},drive=boot,bootindex=1")),
            Bus::Ahci => behind("ahci", ide),
            Bus::VirtioBlk => one("virtio-blk-pci,drive=boot,bootindex=1".into()),
            Bus::VirtioScsi => behind("virtio-scsi-pci", scsi),
            Bus::Nvme => one("nvme,drive=boot,serial=vm512,bootindex=1".into()),
            Bus::Lsi => behind("lsi53c895a", scsi),
            Bus::Pvscsi => behind("pvscsi", scsi),
            Bus::Megasas => behind("megasas", scsi),
            Bus::Mptsas => behind("mptsas1068", scsi),
            Bus::UsbXhci => behind("qemu-xhci", "usb-storage"),
            Bus::UsbEhci => behind("usb-ehci", "usb-storage"),
            // The floppy drive has no boot index: `-boot order=a` (see args). q35 has no
            // floppy controller of its own.
            Bus::Floppy if q35 => {
                vec!["isa-fdc,id=fdc".into(), "floppy,unit=0,drive=boot,bus=fdc.0".into()]
            }
            Bus::Floppy => one("floppy,unit=0,drive=boot".into()),
        }
    }
}

/// Where COM1 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    /// QEMU's stdio: captured by [`Vm`], or this terminal.
    Stdio,
    /// No COM1 at all (`-serial none`), as on most platforms' default VMs. (The tests boot so;
    /// `run` always has COM1.)
    #[cfg_attr(not(test), allow(dead_code))]
    None,
    /// A log file (OpenStack's console log).
    #[cfg_attr(not(test), allow(dead_code))]
    File(PathBuf),
}

/// What the VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A hard disk image on a bus, in a QEMU format (`raw`, `qcow2`, `vmdk`, ...).
    Disk { bus: Bus, format: &'static str },
    /// A CD-ROM image on a bus.
    Cdrom { bus: Bus },
    /// A firmware image in place of the BIOS (`-bios`).
    Bios,
    /// A firmware image in a pflash device (`-drive if=pflash`). (The tests boot the ROM so;
    /// `run` uses `-bios`.)
    #[cfg_attr(not(test), allow(dead_code))]
    Pflash,
}

/// Guest memory OVMF needs to boot (it gives up with less than about 100 MiB).
pub const UEFI_MEMORY_MIB: u32 = 128;

/// The message as it stands on COM1 under OVMF: after the firmware's own text (and its console
/// copy of the message), as a line of its own.
pub fn uefi_line(message: &str) -> String {
    format!("\r\n{message}\r\n")
}

/// The machine's firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's own: SeaBIOS.
    Bios,
    /// OVMF (UEFI) as one read-only image, `-bios`.
    Uefi { image: PathBuf },
    /// OVMF as platforms install it: two pflash drives, its code (read-only) and a writable copy
    /// of its variable store.
    #[cfg_attr(not(test), allow(dead_code))]
    UefiPflash { code: PathBuf, vars: PathBuf },
}

/// Everything that describes one QEMU run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub image: PathBuf,
    pub boot: Boot,
    /// QEMU machine type: `pc`, `q35`, `isapc`.
    pub machine: String,
    pub accel: Accel,
    /// QEMU CPU model (`-cpu`), or QEMU's default.
    pub cpu: Option<String>,
    /// The window's display backend (`gtk`, `sdl`), or none: `-display none`.
    pub display: Option<String>,
    /// COM1.
    pub serial: Serial,
    /// The graphics card (`-vga std`, `vmware`, ...), or the machine's default.
    pub vga: Option<String>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// SeaBIOS or OVMF.
    pub firmware: Firmware,
    /// Extra arguments, appended last.
    pub extra: Vec<OsString>,
    /// What to call this VM in messages, in front of its description (a test case's name).
    pub label: Option<String>,
}

impl VmConfig {
    /// The same VM booted by UEFI `firmware` (OVMF), with the memory OVMF needs.
    pub fn under_uefi(self, firmware: Firmware) -> VmConfig {
        VmConfig { firmware, memory_mib: UEFI_MEMORY_MIB, ..self }
    }

    /// `image` booted as `boot` on `machine`, headless, with the accelerator [`Accel::choose`]
    /// picks.
    pub fn new(image: &Path, boot: Boot, machine: &str) -> VmConfig {
        VmConfig {
            image: image.to_path_buf(),
            boot,
            machine: machine.to_string(),
            accel: Accel::default_choice(),
            cpu: None,
            display: None,
            serial: Serial::Stdio,
            vga: None,
            memory_mib: 32,
            firmware: Firmware::Bios,
            extra: Vec::new(),
            label: None,
        }
    }

    /// The QEMU command line (without QMP).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-machine", &self.machine, "-accel", self.accel.name()]);
        // QEMU's default CPU model otherwise. (Not `-cpu host` under KVM: QEMU 7.2 aborts with it on
        // nested KVM, "failed to set MSR 0x10a".)
        if let Some(cpu) = &self.cpu {
            push(&["-cpu", cpu]);
        }
        push(&["-m", &self.memory_mib.to_string()]);
        match &self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi { image } => push(&["-bios", &image.display().to_string()]),
            Firmware::UefiPflash { code, vars } => push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", escape(code)),
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", escape(vars)),
            ]),
        }
        // No monitor; no network (and so no PXE ROM to wait for); a guest reset ends QEMU
        // instead of booting again, so a crash cannot pass for a boot.
        push(&["-monitor", "none", "-nic", "none", "-no-reboot"]);
        match &self.serial {
            Serial::Stdio => push(&["-serial", "stdio"]),
            Serial::None => push(&["-serial", "none"]),
            Serial::File(path) => push(&["-serial", &format!("file:{}", path.display())]),
        }
        push(&["-display", self.display.as_deref().unwrap_or("none")]);
        if let Some(vga) = &self.vga {
            push(&["-vga", vga]);
        }
        let file = escape(&self.image);
        // snapshot=on: the guest's writes go to a throw-away overlay, so the image never changes
        // and any number of QEMUs can share it (IDE disks refuse readonly=on).
        let drive = |format: &str, media: &str| {
            format!("file={file},format={format},if=none,id=boot,media={media},snapshot=on")
        };
        let attach = |bus: Bus, cd: bool| {
            let mut args = Vec::new();
            for device in bus.devices(&self.machine, cd) {
                args.extend(["-device".to_string(), device]);
            }
            if bus == Bus::Floppy {
                args.extend(["-boot".to_string(), "order=a".to_string()]);
            }
            args
        };
        let strings: Vec<String> = match &self.boot {
            Boot::Disk { bus, format } => {
                let mut args = vec!["-drive".to_string(), drive(format, "disk")];
                args.extend(attach(*bus, false));
                args
            }
            Boot::Cdrom { bus } => {
                let mut args = vec!["-drive".to_string(), drive("raw", "cdrom")];
                args.extend(attach(*bus, true));
                args
            }
            Boot::Bios => vec!["-bios".into(), self.image.display().to_string()],
            Boot::Pflash => {
                vec!["-drive".into(), format!("if=pflash,format=raw,readonly=on,file={file}")]
            }
        };
        args.extend(strings.into_iter().map(OsString::from));
        args.extend(self.extra.iter().cloned());
        args
    }

    /// A short name for messages: "512-byte-vm.raw as disk on ide (pc, tcg)".
    pub fn describe(&self) -> String {
        let name = self.image.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let how = match &self.boot {
            Boot::Disk { bus, .. } => format!("disk on {}", bus.name()),
            Boot::Cdrom { bus } => format!("CD on {}", bus.name()),
            Boot::Bios => "-bios".to_string(),
            Boot::Pflash => "pflash".to_string(),
        };
        let cpu = self.cpu.as_deref().map(|c| format!(", cpu {c}")).unwrap_or_default();
        let label = self.label.as_deref().map(|l| format!("{l}: ")).unwrap_or_default();
        let firmware = match self.firmware {
            Firmware::Bios => "",
            Firmware::Uefi { .. } => ", UEFI",
            Firmware::UefiPflash { .. } => ", UEFI pflash",
        };
        format!("{label}{name} as {how} ({}, {}{firmware}{cpu})", self.machine, self.accel.name())
    }
}

/// A path as a QEMU option value: commas doubled.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The display backends this QEMU was built with (`-display help`): `gtk`, `sdl`, `none`, ...
pub fn display_backends() -> Result<Vec<String>> {
    let out = process::output(Command::new(tools::path(Tool::Qemu)?).args(["-display", "help"]))
        .context("asking QEMU for its display backends")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|line| !line.starts_with("Available"))
        .skip(1)
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect())
}

/// QEMU's version line.
pub fn version() -> Result<String> {
    let out = process::output(Command::new(tools::path(Tool::Qemu)?).arg("--version"))?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())
}

/// Bytes a reader thread collects, shared with whoever waits for them.
#[derive(Default)]
struct Captured {
    bytes: Mutex<Vec<u8>>,
    grew: Condvar,
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

/// Starts a thread that appends everything `source` yields to a shared buffer.
fn capture(mut source: impl Read + Send + 'static) -> Arc<Captured> {
    let captured = Arc::new(Captured::default());
    let sink = Arc::clone(&captured);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = source.read(&mut chunk) {
            sink.bytes.lock().unwrap().extend_from_slice(&chunk[..n]);
            sink.grew.notify_all();
        }
    });
    captured
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

/// A fresh Linux abstract socket name: no file, nothing to clean up. Unique on the machine: the
/// process id (pids wrap at 32768 here, and a killed QEMU may hold its name a moment after its
/// parent is gone), the time this process first asked, and a counter.
pub fn socket_name(kind: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static BORN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let born = BORN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("vm512-{kind}-{}-{born:x}-{n}", std::process::id())
}

/// Connects to the abstract socket `name` that a starting QEMU creates, retrying for up to 30 s;
/// `still_starting` fails as soon as QEMU is gone.
pub fn connect(name: &str, mut still_starting: impl FnMut() -> Result<()>) -> Result<UnixStream> {
    let address = SocketAddr::from_abstract_name(name)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect_addr(&address) {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                still_starting()?;
                if Instant::now() > deadline {
                    return Err(error).with_context(|| format!("no socket @{name} after 30 s"));
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Where COM1 goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Captured for the caller to read ([`Vm::wait_for`]); input through [`Vm::type_serial`].
    Captured,
    /// This terminal: QEMU's output on our stdout and stderr (for `run`).
    Terminal,
}

/// A running QEMU with its QMP control socket. Dropping it kills QEMU and reaps it.
pub struct Vm {
    process: Guarded,
    /// COM1 output, when captured.
    serial: Arc<Captured>,
    stderr: Arc<Captured>,
    /// COM1's input.
    stdin: Option<ChildStdin>,
    qmp: UnixStream,
    /// Everything QMP sent: replies and events (SHUTDOWN, ...).
    qmp_log: Arc<Captured>,
    started: Instant,
    description: String,
}

impl Vm {
    /// Starts QEMU headless with COM1 captured.
    pub fn start(config: &VmConfig) -> Result<Vm> {
        Vm::start_with(config, Console::Captured)
    }

    /// Starts QEMU with COM1 captured or on this terminal, and connects to its QMP socket.
    pub fn start_with(config: &VmConfig, console: Console) -> Result<Vm> {
        let qemu = tools::path(Tool::Qemu)?;
        let description = config.describe();
        let qmp_name = socket_name("qmp");
        let mut command = Command::new(qemu);
        command
            .args(config.args())
            .arg("-qmp")
            .arg(format!("unix:{qmp_name},abstract=on,server=on,wait=off"))
            .stdin(Stdio::piped());
        if console == Console::Captured {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let mut process = process::spawn(&mut command)
            .with_context(|| format!("starting QEMU for {description}"))?;
        let started = Instant::now();
        let child = process.child();
        let serial = child.stdout.take().map(capture).unwrap_or_default();
        let stderr = child.stderr.take().map(capture).unwrap_or_default();
        let stdin = child.stdin.take();
        let qmp = connect(&qmp_name, || match process.try_wait()? {
            Some(status) => {
                thread::sleep(Duration::from_millis(50));
                bail!("{description}: QEMU exited ({status}) at start{}", note(&stderr))
            }
            None => Ok(()),
        })?;
        let qmp_log = capture(qmp.try_clone()?);
        let mut vm = Vm { process, serial, stderr, stdin, qmp, qmp_log, started, description };
        vm.qmp("qmp_capabilities")?;
        Ok(vm)
    }

    /// Runs a QMP command (`system_powerdown`, `quit`, ...) and waits for its reply.
    pub fn qmp(&mut self, command: &str) -> Result<()> {
        self.qmp_json(&format!(r#"{{"execute": "{command}"}}"#))
    }

    /// Sends one QMP command, written as JSON, and waits up to 10 s for its reply.
    pub fn qmp_json(&mut self, json: &str) -> Result<()> {
        let seen = self.qmp_log.bytes.lock().unwrap().len();
        if let Err(error) = send_qmp_line(&mut self.qmp, json) {
            thread::sleep(Duration::from_millis(50));
            let state = match self.process.try_wait()? {
                Some(status) => format!("QEMU exited ({status})"),
                None => "QEMU still runs".to_string(),
            };
            bail!(
                "{}: sending QMP {json}: {error} ({state}); QMP said: {}{}",
                self.description,
                self.qmp_log().trim(),
                self.stderr_note()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        // What QMP said since the command: its reply, perhaps after some events.
        let reply = |log: &Captured| -> Option<Result<()>> {
            let since = String::from_utf8_lossy(&log.bytes.lock().unwrap()[seen..]).into_owned();
            if since.contains(r#""return""#) {
                Some(Ok(()))
            } else if since.contains(r#""error""#) {
                Some(Err(anyhow::anyhow!("QMP {json} failed: {}", since.trim())))
            } else {
                None
            }
        };
        loop {
            if let Some(result) = reply(&self.qmp_log) {
                return result.with_context(|| self.description.clone());
            }
            let log = self.qmp_log.bytes.lock().unwrap();
            drop(self.qmp_log.grew.wait_timeout(log, Duration::from_millis(50)).unwrap());
            let exited = self.process.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                // A reply may have come just before QEMU went.
                thread::sleep(Duration::from_millis(20));
                if let Some(result) = reply(&self.qmp_log) {
                    return result.with_context(|| self.description.clone());
                }
                let state =
                    exited.map_or("QEMU still runs".to_string(), |s| format!("QEMU exited ({s})"));
                bail!(
                    "{}: no QMP reply to {json} ({state}){}",
                    self.description,
                    self.stderr_note()
                );
            }
        }
    }

    /// Everything QMP has said: greeting, replies, events.
    pub fn qmp_log(&self) -> String {
        self.qmp_log.text()
    }

    /// Waits up to `timeout` for QEMU to exit by itself; returns its status and how long that
    /// took, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<(ExitStatus, Duration)>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.process.try_wait()? {
                // QEMU closed QMP on its way out: give the reader a moment for the last events.
                let deadline = Instant::now() + Duration::from_millis(200);
                while !self.qmp_log().contains(r#""event": "SHUTDOWN""#)
                    && Instant::now() < deadline
                {
                    thread::sleep(Duration::from_millis(5));
                }
                return Ok(Some((status, start.elapsed())));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether QMP reported a shutdown the guest asked for (ACPI soft-off), as opposed to one
    /// from the host (`quit`, a signal).
    pub fn guest_shut_down(&self) -> bool {
        let log = self.qmp_log();
        log.contains(r#""event": "SHUTDOWN""#) && log.contains(r#""reason": "guest-shutdown""#)
    }

    /// Waits until COM1 has carried `needle`; returns the time since QEMU started. Fails on
    /// timeout or if QEMU exits first, with what it printed.
    pub fn wait_for(&mut self, needle: &[u8], timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        let wanted = String::from_utf8_lossy(needle).into_owned();
        let failed = |vm: &Vm, why: String| {
            anyhow::anyhow!(
                "{}: {why}; COM1 had {:?}{}",
                vm.description,
                String::from_utf8_lossy(&vm.serial_output()),
                vm.stderr_note()
            )
        };
        loop {
            let bytes = self.serial.bytes.lock().unwrap();
            if contains(&bytes, needle) {
                return Ok(self.started.elapsed());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(bytes);
                return Err(failed(self, format!("no {wanted:?} on COM1 within {timeout:?}")));
            }
            // Wake at least every 50 ms to notice a QEMU that exited.
            let wait = (deadline - now).min(Duration::from_millis(50));
            let bytes = self.serial.grew.wait_timeout(bytes, wait).unwrap().0;
            if !contains(&bytes, needle) {
                drop(bytes);
                if let Some(status) = self.process.try_wait()? {
                    // Let the reader threads drain the pipes before reporting.
                    thread::sleep(Duration::from_millis(50));
                    let why = format!("QEMU exited ({status}) before {wanted:?} appeared on COM1");
                    return Err(failed(self, why));
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// "512-byte-vm.raw as disk on ide (pc, tcg)".
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Types `bytes` on COM1 (the serial console's keyboard).
    pub fn type_serial(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("COM1's input is closed")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Everything COM1 has carried so far.
    pub fn serial_output(&self) -> Vec<u8> {
        self.serial.bytes.lock().unwrap().clone()
    }

    /// "; QEMU said: ..." with what QEMU printed on stderr so far, or nothing.
    pub fn stderr_note(&self) -> String {
        note(&self.stderr)
    }

    /// CPU time QEMU has used so far, all threads (user + system).
    pub fn cpu_time(&self) -> Result<Duration> {
        process::cpu_time(self.pid())
    }

    /// Fails if QEMU has exited: a VM that should idle keeps running. The error gives QEMU's
    /// status and QMP's SHUTDOWN event, whose reason tells a guest power-off (`guest-shutdown`)
    /// from a reset (`guest-reset`, which `-no-reboot` turns into an exit) or a host signal.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            let deadline = Instant::now() + Duration::from_millis(200);
            while !self.qmp_log().contains(r#""event": "SHUTDOWN""#) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let log = self.qmp_log();
            let shutdown = log
                .lines()
                .find(|line| line.contains(r#""event": "SHUTDOWN""#))
                .unwrap_or("no SHUTDOWN event on QMP");
            bail!(
                "{}: QEMU exited ({status}) while it should run; {shutdown}{}",
                self.description,
                self.stderr_note()
            );
        }
        Ok(())
    }
}

/// "; QEMU said: ..." when QEMU wrote to stderr.
fn note(stderr: &Captured) -> String {
    let text = stderr.text();
    if text.trim().is_empty() { String::new() } else { format!("; QEMU said: {}", text.trim()) }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// Starts a VM for each config, all at once (so a matrix costs one boot's time, not the sum).
pub fn start_all(configs: &[VmConfig]) -> Result<Vec<Vm>> {
    configs.iter().map(Vm::start).collect()
}

/// Waits until every VM's COM1 has carried `needle`; returns the time until the last one did.
/// Fails naming every VM that did not, not just the first.
pub fn wait_all_for(vms: &mut [Vm], needle: &[u8], timeout: Duration) -> Result<Duration> {
    let mut last = Duration::ZERO;
    let mut failures = Vec::new();
    for vm in vms.iter_mut() {
        match vm.wait_for(needle, timeout) {
            Ok(at) => last = last.max(at),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{} of {} VMs failed:\n{}", failures.len(), vms.len(), failures.join("\n"));
    }
    Ok(last)
}

/// What an idle VM costs its host over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleCost {
    /// CPU time as a share of one core.
    pub cpu: f64,
    /// Wake-ups per second: context switches of all QEMU's threads.
    pub wakeups: f64,
}

/// CPU use and wake-ups of each VM over one shared `window`. Fails if a QEMU exits meanwhile.
pub fn idle_costs(vms: &mut [Vm], window: Duration) -> Result<Vec<IdleCost>> {
    let sample = |vm: &Vm| -> Result<(Duration, u64)> {
        Ok((vm.cpu_time()?, process::context_switches(vm.pid())?))
    };
    let before: Vec<_> = vms.iter().map(sample).collect::<Result<_>>()?;
    let start = Instant::now();
    thread::sleep(window);
    let elapsed = start.elapsed().as_secs_f64();
    vms.iter_mut()
        .zip(before)
        .map(|(vm, (cpu, switches))| {
            vm.check_running()?;
            let (cpu_after, switches_after) = sample(vm)?;
            Ok(IdleCost {
                cpu: (cpu_after - cpu).as_secs_f64() / elapsed,
                wakeups: switches_after.saturating_sub(switches) as f64 / elapsed,
            })
        })
        .collect()
}

/// CPU use of each VM over one shared `window`, as shares of one core. Fails if a QEMU exits
/// meanwhile: an idle VM keeps running.
pub fn cpu_shares(vms: &mut [Vm], window: Duration) -> Result<Vec<f64>> {
    let before: Vec<_> = vms.iter().map(Vm::cpu_time).collect::<Result<_>>()?;
    let start = Instant::now();
    thread::sleep(window);
    let elapsed = start.elapsed().as_secs_f64();
    vms.iter_mut()
        .zip(before)
        .map(|(vm, before)| {
            vm.check_running()?;
            Ok((vm.cpu_time()? - before).as_secs_f64() / elapsed)
        })
        .collect()
}

/// Writes one QMP command and its line end in a single write. QEMU runs a command as soon as its
/// JSON closes, before the line end arrives: a VM that powers off at once (`system_powerdown`,
/// or `send-key` to a VM that powers off on a key) can take QEMU away between two writes, and
/// the second would fail with a broken pipe although the command was carried out.
fn send_qmp_line(qmp: &mut impl Write, json: &str) -> std::io::Result<()> {
    qmp.write_all(format!("{json}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QMP peer as QEMU is to a VM that powers off at once: it runs the command when its JSON
    /// closes and is gone before any later write.
    struct GoneAfterTheCommand {
        received: Vec<u8>,
    }

    impl Write for GoneAfterTheCommand {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.received.contains(&b'}') {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.received.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_qmp_command_goes_whole_even_when_qemu_leaves_right_after_it() {
        let mut qemu = GoneAfterTheCommand { received: Vec::new() };
        send_qmp_line(&mut qemu, r#"{"execute": "system_powerdown"}"#).unwrap();
        assert_eq!(qemu.received, b"{\"execute\": \"system_powerdown\"}\n");
    }

    fn line(config: &VmConfig) -> String {
        config.args().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn command_line_for_each_bus_names_the_right_device() {
        let mut config = VmConfig::new(
            Path::new("/images/a,b.raw"),
            Boot::Disk { bus: Bus::Ide, format: "raw" },
            "pc",
        );
        config.accel = Accel::Tcg;
        let ide = line(&config);
        assert!(ide.contains("-machine pc -accel tcg"), "{ide}");
        assert!(ide.contains("file=/images/a,,b.raw,format=raw"), "commas are escaped: {ide}");
        assert!(ide.contains("ide-hd,drive=boot"), "{ide}");
        assert!(ide.contains("-display none") && ide.contains("-no-reboot"), "{ide}");
        config.boot = Boot::Disk { bus: Bus::VirtioScsi, format: "qcow2" };
        let scsi = line(&config);
        assert!(scsi.contains("virtio-scsi-pci") && scsi.contains("scsi-hd,drive=boot"), "{scsi}");
        assert!(scsi.contains("format=qcow2"), "{scsi}");
        config.boot = Boot::Cdrom { bus: Bus::Ahci };
        assert!(
            line(&config).contains("ide-cd,drive=boot") && line(&config).contains("media=cdrom")
        );
        config.boot = Boot::Pflash;
        assert!(line(&config).contains("if=pflash,format=raw,readonly=on,file=/images/a,,b.raw"));
    }

    #[test]
    fn a_window_names_its_backend_and_never_leaves_qemu_to_pick_one() {
        // With no `-display`, a QEMU without GTK or SDL falls back to a VNC server.
        let mut config = VmConfig::new(Path::new("a.raw"), Boot::Bios, "pc");
        config.display = Some("gtk".into());
        assert!(line(&config).contains("-display gtk"));
    }

    #[test]
    fn only_tcg_and_kvm_are_accelerators_and_the_choice_says_why() {
        let usable = || Ok(());
        let unusable = || Err("no usable /dev/kvm (Permission denied)".to_string());
        let choose = |forced, kvm| Accel::choose_from(forced, kvm).map_err(|e| e.to_string());
        assert_eq!(choose("", usable()).unwrap(), (Accel::Kvm, "/dev/kvm is usable".into()));
        assert_eq!(choose("", unusable()).unwrap().1, "no usable /dev/kvm (Permission denied)");
        // Forcing TCG where KVM works must not claim that KVM is unusable.
        assert_eq!(choose("tcg", usable()).unwrap(), (Accel::Tcg, "VM512_ACCEL=tcg".into()));
        let error = choose("kvm", unusable()).unwrap_err();
        assert!(error.contains("Permission denied"), "{error}");
        let error = choose("bogus", usable()).unwrap_err();
        assert!(error.contains("must be `kvm` or `tcg`, not `bogus`"), "{error}");
    }
}
