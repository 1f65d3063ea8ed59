//! What the launchers of VMMs other than QEMU share (`cloud_hypervisor`, `firecracker`): the
//! VMM's guarded process, COM1 and its stderr captured, and the waits a caller makes on them.

use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::infra::console::{self, Captured, Waited};
use crate::infra::idle::Watched;
use crate::infra::process::Guarded;

/// How long a VMM may take to open its API socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// A running VMM with one guest. Dropping it kills the VMM.
pub struct Guest {
    pub process: Guarded,
    /// COM1 output.
    pub serial: Arc<Captured>,
    pub stderr: Arc<Captured>,
    started: Instant,
    /// "512-byte-vm.pvh on Firecracker (kvm)".
    description: String,
    /// The VMM's name in messages: "Firecracker".
    vmm: &'static str,
}

impl Guest {
    /// The VMM just spawned as `process`, with its output captured.
    pub fn new(
        process: Guarded,
        serial: Arc<Captured>,
        stderr: Arc<Captured>,
        vmm: &'static str,
        description: String,
    ) -> Guest {
        Guest { process, serial, stderr, started: Instant::now(), description, vmm }
    }

    /// Waits until the VMM has created its API socket at `socket`; fails, with what it said
    /// (`also` adds where else it writes), if it exits first or takes too long.
    pub fn wait_for_socket(
        &mut self,
        socket: &Path,
        also: impl Fn(&Guest) -> String,
    ) -> Result<()> {
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        while !socket.exists() {
            if let Some(status) = self.process.try_wait()? {
                thread::sleep(console::DRAIN);
                bail!(
                    "{}: {} exited ({status}) at start{}{}",
                    self.description,
                    self.vmm,
                    self.stderr_note(),
                    also(self)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no API socket after {SOCKET_TIMEOUT:?}{}",
                    self.description,
                    self.stderr_note()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Waits until COM1 has carried `needle`; returns the time since the VMM started. Fails on
    /// timeout or if the VMM exits first, with what COM1 and its stderr carried.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn wait_for(&mut self, needle: &[u8], timeout: Duration) -> Result<Duration> {
        let wanted = String::from_utf8_lossy(needle);
        let process = &mut self.process;
        let why = match console::wait_until_contains(&self.serial, needle, timeout, || {
            process.try_wait()
        })? {
            Waited::Found => return Ok(self.started.elapsed()),
            Waited::TimedOut => format!("no {wanted:?} on COM1 within {timeout:?}"),
            Waited::Exited(status) => {
                format!("{} exited ({status}) before {wanted:?} appeared on COM1", self.vmm)
            }
        };
        let com1 = String::from_utf8_lossy(&self.serial_output()).into_owned();
        bail!("{}: {why}; COM1 had {com1:?}{}", self.description, self.stderr_note())
    }

    /// Everything COM1 has carried so far.
    pub fn serial_output(&self) -> Vec<u8> {
        self.serial.bytes.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the VMM to exit by itself; returns its status and how long that
    /// took, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<(ExitStatus, Duration)>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Ok(Some((status, start.elapsed())));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fails if the VMM has exited: a VM that should idle keeps running.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            thread::sleep(console::DRAIN);
            bail!(
                "{}: {} exited ({status}) while it should run{}",
                self.description,
                self.vmm,
                self.stderr_note()
            );
        }
        Ok(())
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// "; Firecracker said: ..." with what the VMM printed on stderr so far, or nothing.
    pub fn stderr_note(&self) -> String {
        console::said(self.vmm, &self.stderr)
    }
}

impl Watched for Guest {
    fn pid(&self) -> u32 {
        Guest::pid(self)
    }

    fn check_running(&mut self) -> Result<()> {
        Guest::check_running(self)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.process.kill();
    }
}
