//! Cloud Hypervisor (CH), a rust-vmm VMM on KVM: it boots the PVH kernel directly (`--kernel`,
//! the ELF's PVH note) with no firmware, no 8259 and no PIT; COM1 is a 16550 behind an I/O APIC,
//! and the ACPI power button is a Generic Event Device. Its quirks:
//!
//! - `--serial tty` puts COM1 on CH's stdout, but CH forwards its stdin to COM1 only when stdin is
//!   a terminal. So CH gets a pseudo-terminal as stdin and stdout, in raw mode (the line
//!   discipline neither echoes what is typed nor turns LF into CR LF), and COM1 is read and typed
//!   on the master side.
//! - CH writes its own log lines (warnings about the host) to stderr, captured apart from COM1.
//! - It is driven over an HTTP API on a unix socket, a file (here in a scratch directory), through
//!   its client `ch-remote`: `power-button` presses the ACPI power button, and the guest's ACPI
//!   soft-off (S5) ends CH with status 0.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use anyhow::{Context, Result, bail};

use crate::infra::console::{self, capture};
use crate::infra::files::Scratch;
use crate::infra::guest::Guest;
use crate::infra::idle::Watched;
use crate::infra::process;
use crate::infra::tools;

/// `cloud-hypervisor` on PATH, when its client `ch-remote` is beside it or on PATH too.
pub fn binary() -> Option<PathBuf> {
    let vmm = tools::find_in_path("cloud-hypervisor")?;
    ch_remote(&vmm).map(|_| vmm)
}

/// `ch-remote` beside `vmm`, else on PATH.
fn ch_remote(vmm: &Path) -> Option<PathBuf> {
    let beside = vmm.with_file_name("ch-remote");
    if beside.is_file() { Some(beside) } else { tools::find_in_path("ch-remote") }
}

/// A running Cloud Hypervisor with COM1 on a pseudo-terminal. Dropping it kills CH and removes
/// its API socket.
pub struct ChVm {
    guest: Guest,
    /// The terminal's master side: what is written there arrives on COM1.
    terminal: File,
    ch_remote: PathBuf,
    api_socket: PathBuf,
    /// Holds the API socket; declared last, so it goes after CH.
    _scratch: Scratch,
}

impl ChVm {
    /// Starts CH headless on `kernel` (one vCPU, 64 MiB) and waits until its API socket is open.
    pub fn start(kernel: &Path) -> Result<ChVm> {
        ChVm::start_with_nic(kernel, None)
    }

    /// As [`start`](Self::start), with a virtio-net card (CH's are on PCI) on the tap named
    /// `nic.0` with MAC `nic.1`, when given.
    pub fn start_with_nic(kernel: &Path, nic: Option<(&str, &str)>) -> Result<ChVm> {
        let vmm = binary().context("cloud-hypervisor (and ch-remote) not found in PATH")?;
        let ch_remote = ch_remote(&vmm).context("ch-remote not found")?;
        let name = kernel.file_name().unwrap_or(kernel.as_os_str()).to_string_lossy();
        let description = format!("{name} on Cloud Hypervisor (kvm)");
        let scratch = Scratch::new("cloud-hypervisor")?;
        let api_socket = scratch.join("api.sock");
        // CH splits its option values at commas.
        if api_socket.to_string_lossy().contains(',') {
            bail!("{description}: a comma in the API socket's path {}", api_socket.display());
        }
        let (terminal, guest_side) = raw_pty().context("opening a pseudo-terminal for COM1")?;
        let mut command = Command::new(&vmm);
        command
            .arg("--kernel")
            .arg(kernel)
            .args(["--cpus", "boot=1", "--memory", "size=64M", "--serial", "tty"])
            .args(["--console", "off", "--api-socket"])
            .arg(format!("path={}", api_socket.display()));
        if let Some((tap, mac)) = nic {
            command.args(["--net", &format!("tap={tap},mac={mac}")]);
        }
        command
            .stdin(Stdio::from(guest_side.try_clone()?))
            .stdout(Stdio::from(guest_side))
            .stderr(Stdio::piped());
        let mut process = process::spawn(&mut command)
            .with_context(|| format!("starting {} for {description}", vmm.display()))?;
        // The command holds this process's copies of the terminal's CH side: closed, the master
        // side reads end of file once CH is gone.
        drop(command);
        let stderr = process.child().stderr.take().map(capture).unwrap_or_default();
        let serial = capture(terminal.try_clone()?);
        let mut guest = Guest::new(process, serial, stderr, "Cloud Hypervisor", description);
        guest.wait_for_socket(&api_socket, |_| String::new())?;
        Ok(ChVm { guest, terminal, ch_remote, api_socket, _scratch: scratch })
    }

    /// Types `bytes` on COM1.
    pub fn type_serial(&mut self, bytes: &[u8]) -> Result<()> {
        self.terminal.write_all(bytes).context("typing on COM1's terminal")
    }

    /// Presses the ACPI power button (`ch-remote power-button`).
    pub fn power_button(&mut self) -> Result<()> {
        let out = process::output(
            Command::new(&self.ch_remote)
                .arg("--api-socket")
                .arg(&self.api_socket)
                .arg("power-button"),
        )
        .with_context(|| format!("running {}", self.ch_remote.display()))?;
        if out.status.success() {
            return Ok(());
        }
        // A guest that powers off at once can take CH, and with it the API's reply, away
        // before ch-remote reads it: the button was pressed all the same.
        thread::sleep(console::DRAIN);
        if self.process.try_wait()?.is_some() {
            return Ok(());
        }
        bail!(
            "{}: ch-remote power-button failed ({}): {}{}",
            self.description(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            self.stderr_note()
        )
    }
}

impl Watched for ChVm {
    fn pid(&self) -> u32 {
        self.guest.pid()
    }

    fn check_running(&mut self) -> Result<()> {
        self.guest.check_running()
    }
}

/// COM1, the waits and the process: what every launcher's VM has (`guest.rs`).
impl std::ops::Deref for ChVm {
    type Target = Guest;

    fn deref(&self) -> &Guest {
        &self.guest
    }
}

impl std::ops::DerefMut for ChVm {
    fn deref_mut(&mut self) -> &mut Guest {
        &mut self.guest
    }
}

/// A pseudo-terminal in raw mode, both sides close-on-exec (no other child inherits them):
/// the master side, and the side a VMM gets as its terminal.
fn raw_pty() -> io::Result<(File, OwnedFd)> {
    let (mut master, mut guest) = (-1, -1);
    // SAFETY: openpty(3) writes two descriptors; no name wanted, default settings and size.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut guest,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if opened != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    let (master, guest) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(guest)) };
    // SAFETY: fcntl(2), tcgetattr(3), cfmakeraw(3) and tcsetattr(3) on descriptors owned here;
    // termios is plain data that tcgetattr fills before use.
    unsafe {
        for fd in [master.as_raw_fd(), guest.as_raw_fd()] {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(guest.as_raw_fd(), &mut termios) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut termios);
        if libc::tcsetattr(guest.as_raw_fd(), libc::TCSANOW, &termios) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((master, guest))
}
