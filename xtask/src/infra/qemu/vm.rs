//! A running QEMU: its process (a guarded child: see `process.rs`), COM1 captured or on the
//! terminal, and QMP, QEMU's control protocol, over a Linux abstract socket, so that no socket
//! file is ever left behind and no path (with its commas or its length) is involved.

use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::VmConfig;
use crate::infra::console::{Captured, capture, contains};
use crate::infra::idle::Watched;
use crate::infra::process::{self, Guarded};
use crate::infra::tools::{self, Tool};

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

impl Watched for Vm {
    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn check_running(&mut self) -> Result<()> {
        Vm::check_running(self)
    }
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
}
