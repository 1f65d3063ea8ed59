//! The one QEMU launcher, used by `run`, the boot tests and the benchmarks.
//!
//! A [`Vm`] owns its QEMU process and kills it when dropped, on success, failure or panic alike,
//! so no test leaves a QEMU behind. COM1 is QEMU's stdout, collected by a reader thread.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The emulator for the VM: a PC with SeaBIOS.
const QEMU: &str = "qemu-system-x86_64";

/// Finds `qemu-system-x86_64`, or says how to install it.
pub fn binary() -> Result<PathBuf> {
    find_in_path(QEMU).with_context(|| {
        format!(
            "{QEMU} was not found in PATH; it boots the VM. Install it: \
             `sudo apt-get install qemu-system-x86` (Debian/Ubuntu), \
             `sudo dnf install qemu-system-x86` (Fedora), `brew install qemu` (macOS)"
        )
    })
}

/// Finds `qemu-img`, or says how to install it.
pub fn img_binary() -> Result<PathBuf> {
    find_in_path("qemu-img").context(
        "qemu-img was not found in PATH; it converts the disk formats (qcow2, vmdk, vdi, vhd). \
         Install it: `sudo apt-get install qemu-utils` (Debian/Ubuntu), \
         `sudo dnf install qemu-img` (Fedora), `brew install qemu` (macOS)",
    )
}

/// The first executable called `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

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
    /// reading and writing, TCG when not.
    pub fn detect() -> Accel {
        match std::env::var(ACCEL_ENV).as_deref() {
            Ok("tcg") => Accel::Tcg,
            Ok("kvm") => Accel::Kvm,
            _ if kvm_usable() => Accel::Kvm,
            _ => Accel::Tcg,
        }
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
    if kvm_usable() {
        accels.push(Accel::Kvm);
    }
    accels
}

/// Whether this user can use KVM.
pub fn kvm_usable() -> bool {
    fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// The disk controllers hypervisors attach boot disks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// PIIX IDE, the `pc` machine's own controller.
    Ide,
    /// ICH9 AHCI (SATA), the `q35` machine's own controller.
    Ahci,
    /// virtio-blk-pci.
    VirtioBlk,
    /// virtio-scsi-pci with a scsi-hd / scsi-cd.
    VirtioScsi,
}

impl Bus {
    pub const ALL: [Bus; 4] = [Bus::Ide, Bus::Ahci, Bus::VirtioBlk, Bus::VirtioScsi];

    pub fn name(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Ahci => "ahci",
            Bus::VirtioBlk => "virtio-blk",
            Bus::VirtioScsi => "virtio-scsi",
        }
    }

    /// The machine whose built-in controller this is (`pc` for IDE, `q35` for AHCI); virtio
    /// works on either and uses `pc`.
    pub fn machine(self) -> &'static str {
        match self {
            Bus::Ahci => "q35",
            _ => "pc",
        }
    }
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
    /// A firmware image in a pflash device (`-drive if=pflash`). (The tests boot it so; `run`
    /// uses `-bios`.)
    #[cfg_attr(not(test), allow(dead_code))]
    Pflash,
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
    /// Open a window for the screen (otherwise `-display none`).
    pub window: bool,
    /// Extra arguments, appended last.
    pub extra: Vec<OsString>,
}

impl VmConfig {
    /// `image` in `format` on `bus`, on the machine whose controller that is.
    pub fn boot(image: &Path, format: crate::formats::Format, bus: Bus) -> VmConfig {
        VmConfig {
            boot: format.boot(bus),
            machine: bus.machine().to_string(),
            ..VmConfig::disk(image)
        }
    }

    /// A raw disk image on IDE, headless, with the best accelerator available.
    pub fn disk(image: &Path) -> VmConfig {
        VmConfig {
            image: image.to_path_buf(),
            boot: Boot::Disk { bus: Bus::Ide, format: "raw" },
            machine: Bus::Ide.machine().to_string(),
            accel: Accel::detect(),
            cpu: None,
            window: false,
            extra: Vec::new(),
        }
    }

    /// The QEMU command line.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-machine", &self.machine, "-accel", self.accel.name()]);
        // QEMU's default model otherwise. (Not `-cpu host` under KVM: QEMU 7.2 aborts with it on
        // nested KVM, "failed to set MSR 0x10a".)
        if let Some(cpu) = &self.cpu {
            push(&["-cpu", cpu]);
        }
        push(&["-m", "32"]);
        // COM1 on stdout; no monitor; no network (and so no PXE ROM to wait for); a guest reset
        // ends QEMU instead of booting again, so a crash cannot pass for a boot.
        push(&["-serial", "stdio", "-monitor", "none", "-nic", "none", "-no-reboot"]);
        if !self.window {
            push(&["-display", "none"]);
        }
        let file = self.image.display().to_string().replace(',', ",,");
        // snapshot=on: the guest's writes go to a throw-away overlay, so the image never changes
        // and any number of QEMUs can share it (IDE disks refuse readonly=on).
        let drive = |format: &str, media: &str| {
            format!("file={file},format={format},if=none,id=boot,media={media},snapshot=on")
        };
        match &self.boot {
            Boot::Disk { bus, format } => {
                push(&["-drive", &drive(format, "disk")]);
                match bus {
                    Bus::Ide | Bus::Ahci => push(&["-device", "ide-hd,drive=boot,bootindex=1"]),
                    Bus::VirtioBlk => push(&["-device", "virtio-blk-pci,drive=boot,bootindex=1"]),
                    Bus::VirtioScsi => push(&[
                        "-device",
                        "virtio-scsi-pci,id=scsi",
                        "-device",
                        "scsi-hd,drive=boot,bus=scsi.0,bootindex=1",
                    ]),
                }
            }
            Boot::Cdrom { bus } => {
                push(&["-drive", &drive("raw", "cdrom")]);
                match bus {
                    Bus::VirtioScsi => push(&[
                        "-device",
                        "virtio-scsi-pci,id=scsi",
                        "-device",
                        "scsi-cd,drive=boot,bus=scsi.0,bootindex=1",
                    ]),
                    _ => push(&["-device", "ide-cd,drive=boot,bootindex=1"]),
                }
            }
            Boot::Bios => push(&["-bios", &self.image.display().to_string()]),
            Boot::Pflash => {
                push(&["-drive", &format!("if=pflash,format=raw,readonly=on,file={file}")])
            }
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// Bytes a QEMU wrote, shared with the thread that reads them.
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

/// Where COM1 goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Captured for the caller to read ([`Vm::wait_for`]), input through [`Vm::send_serial`].
    Captured,
    /// This terminal: QEMU's output on our stdout, our stdin forwarded to COM1 (for `run`).
    Terminal,
}

/// A running QEMU with its QMP control socket. Dropping it kills QEMU and reaps it.
pub struct Vm {
    child: Child,
    /// COM1 output, when captured.
    serial: Arc<Captured>,
    stderr: Arc<Captured>,
    /// COM1's input (kept open; only the tests type on it).
    #[cfg_attr(not(test), allow(dead_code))]
    stdin: Option<ChildStdin>,
    qmp: UnixStream,
    /// Everything QMP sent: replies and events (SHUTDOWN, ...).
    qmp_log: Arc<Captured>,
    qmp_reader: Option<thread::JoinHandle<()>>,
    qmp_path: PathBuf,
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
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let qemu = binary()?;
        let description = describe(config);
        let qmp_path = std::env::temp_dir().join(format!(
            "vm512-qmp-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&qmp_path);
        let mut command = Command::new(qemu);
        command
            .args(config.args())
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdin(Stdio::piped());
        match console {
            Console::Captured => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            // Its own process group: Ctrl-C on the terminal reaches the xtask, which turns it
            // into a power-button press, not QEMU, which would stop dead.
            Console::Terminal => {
                command.process_group(0);
            }
        }
        let mut child =
            command.spawn().with_context(|| format!("starting QEMU for {description}"))?;
        let started = Instant::now();
        let serial = child.stdout.take().map(capture).unwrap_or_default();
        let stderr = child.stderr.take().map(capture).unwrap_or_default();
        let mut stdin = child.stdin.take();
        if console == Console::Terminal {
            let mut input = stdin.take().expect("stdin is piped");
            thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin(), &mut input);
            });
        }
        let mut vm = Vm {
            qmp: UnixStream::pair()?.0, // replaced right below
            child,
            serial,
            stderr,
            stdin,
            qmp_log: Arc::default(),
            qmp_reader: None,
            qmp_path,
            started,
            description,
        };
        vm.connect_qmp()?;
        Ok(vm)
    }

    /// Connects to QEMU's QMP socket (QEMU creates it while it starts) and leaves the
    /// capabilities negotiation behind, so that commands work.
    fn connect_qmp(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(&self.qmp_path) {
                Ok(stream) => break stream,
                Err(error) => {
                    if let Some(status) = self.child.try_wait()? {
                        bail!(
                            "{}: QEMU exited ({status}) at start{}",
                            self.description,
                            self.stderr_note()
                        );
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "{}: no QMP socket at {}: {error}",
                            self.description,
                            self.qmp_path.display()
                        );
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            }
        };
        self.qmp = stream.try_clone()?;
        let log = Arc::clone(&self.qmp_log);
        self.qmp_reader = Some(thread::spawn(move || {
            let mut source = stream;
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = source.read(&mut chunk) {
                log.bytes.lock().unwrap().extend_from_slice(&chunk[..n]);
                log.grew.notify_all();
            }
        }));
        self.qmp("qmp_capabilities")
    }

    /// Runs a QMP command (`system_powerdown`, `quit`, ...) and waits for its reply.
    pub fn qmp(&mut self, command: &str) -> Result<()> {
        self.qmp_json(&format!(r#"{{"execute": "{command}"}}"#))
    }

    /// Sends one QMP command, written as JSON, and waits up to 10 s for its reply.
    pub fn qmp_json(&mut self, json: &str) -> Result<()> {
        let seen = self.qmp_log.bytes.lock().unwrap().len();
        self.qmp.write_all(json.as_bytes())?;
        self.qmp.write_all(b"\n")?;
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
            let exited = self.child.try_wait()?;
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
            if let Some(status) = self.child.try_wait()? {
                // QEMU closed QMP on its way out: let the reader collect the last events.
                if let Some(reader) = self.qmp_reader.take() {
                    let _ = reader.join();
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
        let mut bytes = self.serial.bytes.lock().unwrap();
        loop {
            if contains(&bytes, needle) {
                return Ok(self.started.elapsed());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(bytes);
                bail!(
                    "{}: no {:?} on COM1 within {timeout:?}; COM1 had {:?}{}",
                    self.description,
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.serial_output()),
                    self.stderr_note()
                );
            }
            // Wake at least every 50 ms to notice a QEMU that exited.
            let wait = (deadline - now).min(Duration::from_millis(50));
            bytes = self.serial.grew.wait_timeout(bytes, wait).unwrap().0;
            if !contains(&bytes, needle) {
                drop(bytes);
                if let Some(status) = self.child.try_wait()? {
                    // Let the reader threads drain the pipes before reporting.
                    thread::sleep(Duration::from_millis(50));
                    bail!(
                        "{}: QEMU exited ({status}) before {:?} appeared on COM1; COM1 had {:?}{}",
                        self.description,
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(&self.serial_output()),
                        self.stderr_note()
                    );
                }
                bytes = self.serial.bytes.lock().unwrap();
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything COM1 has carried so far.
    pub fn serial_output(&self) -> Vec<u8> {
        self.serial.bytes.lock().unwrap().clone()
    }

    /// What QEMU printed on stderr so far.
    pub fn stderr_output(&self) -> String {
        self.stderr.text()
    }

    fn stderr_note(&self) -> String {
        let stderr = self.stderr_output();
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!("; QEMU said: {}", stderr.trim())
        }
    }

    /// CPU time QEMU has used so far, all threads (user + system).
    pub fn cpu_time(&self) -> Result<Duration> {
        process_cpu_time(self.child.id())
    }
}

/// What only the tests need.
#[cfg(test)]
impl Vm {
    /// Types bytes on COM1 (the serial console's keyboard).
    pub fn send_serial(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("COM1 input is the terminal")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Measures QEMU's CPU use over `window` as a share of one core, and fails if QEMU exits
    /// meanwhile.
    pub fn cpu_share_over(&mut self, window: Duration) -> Result<f64> {
        Ok(cpu_shares(std::slice::from_mut(self), window)?[0])
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.qmp_path);
    }
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
            if let Some(status) = vm.child.try_wait()? {
                bail!(
                    "{}: QEMU exited ({status}) while it should idle{}",
                    vm.description,
                    vm.stderr_note()
                );
            }
            Ok((vm.cpu_time()? - before).as_secs_f64() / elapsed)
        })
        .collect()
}

/// A short name for messages: "raw on ide (pc, tcg)".
fn describe(config: &VmConfig) -> String {
    let name = config.image.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let how = match &config.boot {
        Boot::Disk { bus, .. } => format!("disk on {}", bus.name()),
        Boot::Cdrom { bus } => format!("CD on {}", bus.name()),
        Boot::Bios => "-bios".to_string(),
        Boot::Pflash => "pflash".to_string(),
    };
    let cpu = config.cpu.as_deref().map(|c| format!(", cpu {c}")).unwrap_or_default();
    format!("{name} as {how} ({}, {}{cpu})", config.machine, config.accel.name())
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

/// User + system CPU time of process `pid` and all its threads, from `/proc/PID/stat` (fields
/// 14 and 15, in clock ticks of 1/100 s: USER_HZ is 100 on x86 Linux).
pub fn process_cpu_time(pid: u32) -> Result<Duration> {
    const USER_HZ: u64 = 100;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is this Linux?)"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("odd /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime field 15.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_for_each_bus_names_the_right_device() {
        let mut config = VmConfig::disk(Path::new("/images/a,b.raw"));
        config.accel = Accel::Tcg;
        let line = |config: &VmConfig| {
            config
                .args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
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
    }

    #[test]
    fn cpu_time_of_this_process_grows_when_it_works() {
        // Other tests share the cores: spin until the clock moves, giving up after 20 s.
        let before = process_cpu_time(std::process::id()).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after - before < Duration::from_millis(100) && start.elapsed().as_secs() < 20 {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            after = process_cpu_time(std::process::id()).unwrap();
        }
        assert!(after - before >= Duration::from_millis(100), "{before:?} -> {after:?}");
    }

    #[test]
    fn missing_tools_are_not_found() {
        assert!(find_in_path("no-such-tool-vm512").is_none());
        assert!(find_in_path("sh").is_some());
    }
}
