//! libvirt as the tests drive it: its system daemons, and the domains the tests define with
//! `virt-install` and `virsh`, typed as a libvirt user types them.
//!
//! **The daemons.** `libvirtd` serves `qemu:///system` on /run/libvirt/libvirt-sock and logs each
//! VM through `virtlogd` (/run/libvirt/virtlogd-sock). Where one does not answer on its socket (a
//! machine without systemd starts neither), [`Daemons::acquire`] starts it in the foreground, a
//! guarded child of a thread of its own (so that it outlives the test that started it, but not
//! the test process), waits for its socket, and stops exactly what it started (SIGTERM) once the
//! last user is done. Users are counted within the process; other processes that use the same
//! daemons hold a shared flock(2) on /run/libvirt, and the process that started them waits
//! (bounded) until it can lock it exclusively before it stops them. Daemons that were already
//! running are used and left alone.
//!
//! **/dev/kvm.** Where only root may open /dev/kvm (no udev gave it to the `kvm` group), libvirt
//! probes QEMU with CAP_DAC_OVERRIDE, so the probe finds KVM; then it checks whether QEMU's user
//! (`libvirt-qemu`) may open /dev/kvm, finds it may not, drops the probe and probes again, on
//! every call: about 4 s each, and `virt-install` took 2.5 minutes. So the libvirtd started here
//! runs in a mount namespace of its own in which /dev/kvm is a stand-in that only root may open
//! and that is no KVM (a device node with /dev/null's numbers): it finds no KVM, probes once, and
//! runs its VMs under TCG (`--virt-type qemu`, which the tests ask for anyway). Nothing changes
//! for the rest of the machine.
//!
//! **Domains.** [`Domain::new`] names one no other has (`vm512-test-<pid>-<n>-<label>`);
//! dropping it destroys and undefines it, its UEFI variable store too, and removes its log.
//! Domains of test processes that are gone (killed before they could clean up) are removed when
//! the daemons are acquired.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::infra::files::Scratch;
use crate::infra::process::{self, Guarded};
use crate::infra::tools::{self, Tool};

/// The connection the tests use, root's default.
pub const URI: &str = "qemu:///system";
/// libvirt's runtime directory: the daemons' sockets, and the lock users share.
const RUN_DIR: &str = "/run/libvirt";
const LIBVIRTD_SOCKET: &str = "/run/libvirt/libvirt-sock";
const VIRTLOGD_SOCKET: &str = "/run/libvirt/virtlogd-sock";
/// Where libvirt logs each QEMU domain, as `<name>.log`.
const DOMAIN_LOGS: &str = "/var/log/libvirt/qemu";
/// The start of every domain name the tests give.
const DOMAIN_PREFIX: &str = "vm512-test-";
/// How long a daemon may take to open its socket, and to exit on SIGTERM.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `virsh` command may take.
pub const VIRSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for another process that starts or stops the daemons, and, before stopping
/// daemons started here, for other processes to be done with them.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Why libvirt's daemons cannot be had here, if they cannot: they are not running and only root
/// can start them.
pub fn unavailable() -> Option<String> {
    (!tools::is_root() && !answers(LIBVIRTD_SOCKET)).then(|| {
        format!("libvirtd does not answer on {LIBVIRTD_SOCKET}, and only root can start it")
    })
}

/// libvirtd and virtlogd, running while this handle lives (see the module documentation).
pub struct Daemons(());

/// What this process holds of the daemons, shared by every [`Daemons`] handle.
struct Shared {
    users: usize,
    session: Option<Session>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared { users: 0, session: None });

impl Daemons {
    /// Makes sure libvirtd and virtlogd answer, starting what does not (bounded waits).
    pub fn acquire() -> Result<Daemons> {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.users == 0 {
            shared.session = Some(Session::begin()?);
        }
        shared.users += 1;
        Ok(Daemons(()))
    }

    /// What the daemons started here have written (for a failure's report), or nothing.
    pub fn log(&self) -> String {
        let shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        let started = shared.session.iter().flat_map(|session| &session.started);
        started.map(Daemon::said).collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        shared.users -= 1;
        if shared.users == 0 {
            // Stops what it started, holding the lock: a new user waits for a fresh start.
            drop(shared.session.take());
        }
    }
}

/// This process's use of the daemons: the shared lock on the runtime directory (where it can be
/// opened), and the daemons it started, in the order started.
struct Session {
    lock: Option<File>,
    started: Vec<Daemon>,
    /// The daemons' logs and the /dev/kvm stand-in; declared last, so it goes after them.
    _scratch: Option<Scratch>,
}

impl Session {
    fn begin() -> Result<Session> {
        let lock = fs::create_dir_all(RUN_DIR).and_then(|()| File::open(RUN_DIR)).ok();
        let mut session = Session { lock, started: Vec::new(), _scratch: None };
        session.flock(libc::LOCK_SH)?;
        if !missing().is_empty() {
            if !tools::is_root() {
                bail!("libvirt's daemons are not running, and only root can start them");
            }
            // One process at a time starts them; look again once it is this one's turn.
            session.flock(libc::LOCK_EX)?;
            let missing = missing();
            if !missing.is_empty() {
                let scratch = Scratch::new("libvirt-daemons")?;
                for tool in missing {
                    session.started.push(Daemon::start(tool, &scratch)?);
                }
                session._scratch = Some(scratch);
            }
            session.flock(libc::LOCK_SH)?;
        }
        remove_orphaned_domains();
        Ok(session)
    }

    /// flock(2) `operation` on the runtime directory, waiting up to LOCK_TIMEOUT.
    fn flock(&self, operation: libc::c_int) -> Result<()> {
        let Some(lock) = &self.lock else { return Ok(()) };
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            // SAFETY: flock(2) on a descriptor this session owns.
            if unsafe { libc::flock(lock.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error).with_context(|| format!("locking {RUN_DIR}"));
            }
            if Instant::now() >= deadline {
                bail!("{RUN_DIR} stayed locked by another process for {LOCK_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.started.is_empty() {
            return;
        }
        // Other processes may use what this one started: wait until none does.
        if let Err(error) = self.flock(libc::LOCK_EX) {
            eprintln!("libvirt: stopping the daemons started here all the same: {error:#}");
        }
        // libvirtd first, then the virtlogd it logs through.
        while let Some(daemon) = self.started.pop() {
            drop(daemon);
        }
    }
}

/// The socket a daemon answers on.
fn socket(tool: Tool) -> &'static str {
    if tool == Tool::Libvirtd { LIBVIRTD_SOCKET } else { VIRTLOGD_SOCKET }
}

/// Whether something accepts connections on the unix socket at `path`.
fn answers(path: &str) -> bool {
    UnixStream::connect(path).is_ok()
}

/// The daemons that do not answer, in the order they must start (libvirtd logs through
/// virtlogd). Only root can reach virtlogd's socket: for others, libvirtd answering is enough.
fn missing() -> Vec<Tool> {
    if !tools::is_root() {
        return if answers(LIBVIRTD_SOCKET) { Vec::new() } else { vec![Tool::Libvirtd] };
    }
    [Tool::Virtlogd, Tool::Libvirtd].into_iter().filter(|&tool| !answers(socket(tool))).collect()
}

/// A daemon started here, in the foreground: a guarded child of a thread that lives until told
/// to stop it, or until the daemon exits by itself.
struct Daemon {
    tool: Tool,
    /// Its stdout and stderr.
    log: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<thread::JoinHandle<()>>,
    /// Its exit status, once it has exited by itself.
    exited: Arc<Mutex<Option<ExitStatus>>>,
}

impl Daemon {
    /// Starts `tool` (libvirtd or virtlogd), its output in `scratch`, and waits for its socket.
    fn start(tool: Tool, scratch: &Scratch) -> Result<Daemon> {
        let program = tools::path(tool)?;
        let log = scratch.join(&format!("{}.log", tool.binary()));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&program);
        command.current_dir("/").stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        if tool == Tool::Libvirtd
            && let Some(stand_in) = kvm_stand_in(scratch)?
        {
            hide_kvm(&mut command, &stand_in)?;
        }
        let (started_tx, started_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let exited = Arc::new(Mutex::new(None));
        let exit_status = Arc::clone(&exited);
        let keeper = thread::Builder::new()
            .name(format!("{} keeper", tool.binary()))
            .spawn(move || {
                let mut child = match process::spawn(&mut command) {
                    Ok(child) => child,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                // A message, or the sender dropped, says stop.
                while let Err(RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(Duration::from_millis(100))
                {
                    if let Ok(Some(status)) = child.try_wait() {
                        *exit_status.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
                        return;
                    }
                }
                terminate(&mut child);
            })
            .context("starting a keeper thread")?;
        started_rx
            .recv()
            .context("the keeper thread ended")?
            .with_context(|| format!("starting {}", program.display()))?;
        let daemon = Daemon { tool, log, stop: Some(stop), keeper: Some(keeper), exited };
        daemon.wait_for_socket()?;
        Ok(daemon)
    }

    fn wait_for_socket(&self) -> Result<()> {
        let socket = socket(self.tool);
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while !answers(socket) {
            let exited = *self.exited.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(status) = exited {
                bail!("{} exited ({status}) as it started{}", self.tool.binary(), self.said());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer on {socket} within {DAEMON_TIMEOUT:?}{}",
                    self.tool.binary(),
                    self.said()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// "\n<daemon> said: ..." with what it wrote, or nothing.
    fn said(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("\n{} said:\n{text}", self.tool.binary())
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// SIGTERM (the daemons' orderly stop), then SIGKILL to the whole group if it is still running
/// DAEMON_TIMEOUT later.
fn terminate(child: &mut Guarded) {
    // SAFETY: kill(2) on a child not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + DAEMON_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.kill();
}

/// Where only root may open /dev/kvm, a stand-in for it in `scratch`: a device node that only
/// root may open and that is no KVM (/dev/null's numbers). `None` where there is no /dev/kvm or
/// its group or others may use it (see the module documentation).
fn kvm_stand_in(scratch: &Scratch) -> Result<Option<PathBuf>> {
    let Ok(kvm) = fs::metadata("/dev/kvm") else { return Ok(None) };
    if !kvm.file_type().is_char_device() || kvm.permissions().mode() & 0o066 != 0 {
        return Ok(None);
    }
    let path = scratch.join("kvm");
    let name = CString::new(path.as_os_str().as_bytes()).context("a NUL in the scratch path")?;
    // SAFETY: mknod(2) with a NUL-terminated path.
    if unsafe { libc::mknod(name.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("creating the /dev/kvm stand-in {}", path.display()));
    }
    Ok(Some(path))
}

/// Runs `command` in a mount namespace of its own, with `stand_in` mounted over /dev/kvm.
fn hide_kvm(command: &mut Command, stand_in: &Path) -> Result<()> {
    let source = CString::new(stand_in.as_os_str().as_bytes()).context("a NUL in a path")?;
    // mount(2) with no file system type and no data.
    fn mount(source: &CStr, target: &CStr, flags: libc::c_ulong) -> bool {
        let (no_type, no_data) = (std::ptr::null(), std::ptr::null());
        // SAFETY: NUL-terminated strings; mount(2) is a plain system call.
        unsafe { libc::mount(source.as_ptr(), target.as_ptr(), no_type, flags, no_data) == 0 }
    }
    // SAFETY: only unshare(2) and mount(2) between fork and exec, on strings made before.
    unsafe {
        command.pre_exec(move || {
            // Private first, so that the bind mount stays in this namespace.
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || !mount(c"none", c"/", private)
                || !mount(&source, c"/dev/kvm", libc::MS_BIND)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    Ok(())
}

/// `tool` (virt-install, virsh) with [`URI`] as its default connection.
pub fn command(tool: Tool) -> Result<Command> {
    let mut command = Command::new(tools::path(tool)?);
    command.env("LIBVIRT_DEFAULT_URI", URI);
    Ok(command)
}

/// Runs `virsh ARGS` (bounded by VIRSH_TIMEOUT); what it printed, trimmed, or an error with what
/// it said.
pub fn virsh(args: &[&str]) -> Result<String> {
    let out = process::output_within(command(Tool::Virsh)?.args(args), VIRSH_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "virsh {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A libvirt domain the tests define: destroyed and undefined (its UEFI variable store too), and
/// its log removed, when dropped.
pub struct Domain {
    name: String,
}

impl Domain {
    /// A name no other domain has: `vm512-test-<pid>-<n>-<label>`. Defines nothing yet.
    pub fn new(label: &str) -> Domain {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Domain { name: format!("{DOMAIN_PREFIX}{}-{n}-{label}", std::process::id()) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `virsh domstate --reason`: "running (booted)", "shut off (shutdown)", ...
    pub fn state(&self) -> Result<String> {
        virsh(&["domstate", "--reason", &self.name])
    }

    /// What libvirt logged of it: QEMU's command line and messages.
    pub fn log(&self) -> String {
        let path = log_path(&self.name);
        fs::read_to_string(&path)
            .unwrap_or_else(|error| format!("(no log at {}: {error})", path.display()))
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        remove_domain(&self.name);
    }
}

fn log_path(name: &str) -> PathBuf {
    Path::new(DOMAIN_LOGS).join(format!("{name}.log"))
}

/// Stops and undefines the domain `name` and removes its log. A domain that is not running, or
/// not defined, makes virsh fail: nothing to do then.
fn remove_domain(name: &str) {
    let _ = virsh(&["destroy", name]);
    let _ = virsh(&["undefine", "--nvram", name]);
    let _ = fs::remove_file(log_path(name));
}

/// Removes the domains, and the logs, of test processes that no longer exist.
fn remove_orphaned_domains() {
    if let Ok(names) = virsh(&["list", "--all", "--name"]) {
        names.lines().map(str::trim).filter(|name| orphaned(name)).for_each(remove_domain);
    }
    // libvirtd may write a log line as it takes back a running orphan: the log can come back.
    for entry in fs::read_dir(DOMAIN_LOGS).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.strip_suffix(".log").is_some_and(orphaned) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether `name` is a test's domain whose process no longer exists.
fn orphaned(name: &str) -> bool {
    let pid = name.strip_prefix(DOMAIN_PREFIX).and_then(|rest| rest.split('-').next());
    pid.and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_unique_and_name_their_process() {
        let (a, b) = (Domain::new("x"), Domain::new("x"));
        assert_ne!(a.name(), b.name());
        let pid = std::process::id().to_string();
        let rest = a.name().strip_prefix(DOMAIN_PREFIX).unwrap();
        assert_eq!(rest.split('-').next(), Some(pid.as_str()));
        assert!(!orphaned(a.name()), "this process exists");
        assert!(orphaned(&format!("{DOMAIN_PREFIX}{}-0-x", u32::MAX)));
        assert!(!orphaned("vm512-test-x") && !orphaned("someone-elses-domain"));
        // Nothing was defined: nothing for virsh to remove.
        std::mem::forget(a);
        std::mem::forget(b);
    }
}
