//! Firecracker (FC), the rust-vmm microVM monitor on KVM: it boots the PVH kernel directly
//! (`kernel_image_path` in a JSON configuration file) with no firmware and no ACPI power button;
//! a 16550 COM1, an I/O APIC and an i8042 whose only use is the reset line. Its quirks:
//!
//! - COM1 is on FC's stdout, and a plain pipe on its stdin is typed on COM1. FC writes its own log
//!   lines to stdout too: `--level Error` keeps them out of COM1 on a good run.
//! - FC refuses to start if its API socket's path exists: each VM gets a fresh scratch directory
//!   for the socket and the configuration file, removed with the VM.
//! - The graceful stop is the API's `SendCtrlAltDel` action (HTTP/1.1 over the unix socket,
//!   written here by hand): FC presses Ctrl-Alt-Del on the i8042, the guest resets through the
//!   i8042, and FC exits with status 0.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::infra::console::{self, capture};
use crate::infra::files::Scratch;
use crate::infra::guest::Guest;
use crate::infra::idle::Watched;
use crate::infra::process;
use crate::infra::tools;

const API_TIMEOUT: Duration = Duration::from_secs(10);

/// `firecracker` on PATH.
pub fn binary() -> Option<PathBuf> {
    tools::find_in_path("firecracker")
}

/// A running Firecracker with COM1 captured. Dropping it kills FC and removes its API socket and
/// configuration file.
pub struct FcVm {
    guest: Guest,
    /// COM1's input.
    stdin: ChildStdin,
    api_socket: PathBuf,
    /// Holds the API socket and the configuration file; declared last, so it goes after FC.
    _scratch: Scratch,
}

impl FcVm {
    /// Starts FC headless on `kernel` (one vCPU, 64 MiB) and waits until its API socket is open.
    pub fn start(kernel: &Path) -> Result<FcVm> {
        FcVm::start_with_nic(kernel, None)
    }

    /// As [`start`](Self::start), with a virtio-net card (on virtio-mmio) on the tap named
    /// `nic.0` with MAC `nic.1`, when given.
    pub fn start_with_nic(kernel: &Path, nic: Option<(&str, &str)>) -> Result<FcVm> {
        let vmm = binary().context("firecracker not found in PATH")?;
        let name = kernel.file_name().unwrap_or(kernel.as_os_str()).to_string_lossy();
        let description = format!("{name} on Firecracker (kvm)");
        let kernel = std::path::absolute(kernel)?;
        let kernel = kernel.to_str().with_context(|| format!("{kernel:?} is not UTF-8"))?;
        let scratch = Scratch::new("firecracker")?;
        let (api_socket, config) = (scratch.join("api.sock"), scratch.join("config.json"));
        let interfaces = match nic {
            Some((tap, mac)) => format!(
                r#", "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": {}, "guest_mac": {}}}]"#,
                json_string(tap),
                json_string(mac)
            ),
            None => String::new(),
        };
        let json = format!(
            r#"{{"boot-source": {{"kernel_image_path": {}}}, "drives": [], "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}}{interfaces}}}"#,
            json_string(kernel)
        );
        std::fs::write(&config, json).with_context(|| format!("writing {}", config.display()))?;
        let mut command = Command::new(&vmm);
        command
            .arg("--api-sock")
            .arg(&api_socket)
            .arg("--config-file")
            .arg(&config)
            .args(["--level", "Error"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = process::spawn(&mut command)
            .with_context(|| format!("starting {} for {description}", vmm.display()))?;
        let child = process.child();
        let serial = child.stdout.take().map(capture).unwrap_or_default();
        let stderr = child.stderr.take().map(capture).unwrap_or_default();
        let stdin = child.stdin.take().context("FC's stdin")?;
        let mut guest = Guest::new(process, serial, stderr, "Firecracker", description);
        // FC logs its errors on stdout.
        guest.wait_for_socket(&api_socket, |guest| {
            console::said("Firecracker on stdout", &guest.serial)
        })?;
        Ok(FcVm { guest, stdin, api_socket, _scratch: scratch })
    }

    /// Types `bytes` on COM1.
    pub fn type_serial(&mut self, bytes: &[u8]) -> Result<()> {
        self.stdin.write_all(bytes).context("typing on COM1")?;
        self.stdin.flush().context("typing on COM1")
    }

    /// The graceful stop: `SendCtrlAltDel` through the API, which must answer 2xx.
    pub fn power_button(&mut self) -> Result<()> {
        let body = r#"{"action_type": "SendCtrlAltDel"}"#;
        let response = api_request(&self.api_socket, "PUT", "/actions", body);
        let why = match response {
            Ok((200..=299, _)) => return Ok(()),
            Ok((_, text)) => format!("FC answered {:?}", text.trim()),
            Err(error) => {
                // A guest that resets at once can take FC, and its reply, away first.
                thread::sleep(console::DRAIN);
                if self.process.try_wait()?.is_some() {
                    return Ok(());
                }
                format!("{error:#}")
            }
        };
        bail!("{}: PUT /actions SendCtrlAltDel: {why}{}", self.description(), self.stderr_note())
    }
}

impl Watched for FcVm {
    fn pid(&self) -> u32 {
        self.guest.pid()
    }

    fn check_running(&mut self) -> Result<()> {
        self.guest.check_running()
    }
}

/// COM1, the waits and the process: what every launcher's VM has (`guest.rs`).
impl std::ops::Deref for FcVm {
    type Target = Guest;

    fn deref(&self) -> &Guest {
        &self.guest
    }
}

impl std::ops::DerefMut for FcVm {
    fn deref_mut(&mut self) -> &mut Guest {
        &mut self.guest
    }
}

/// `text` as a JSON string: quoted, with quotes, backslashes and control characters escaped.
fn json_string(text: &str) -> String {
    let mut json = String::from('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => json.extend(['\\', c]),
            c if c < ' ' => json.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => json.push(c),
        }
    }
    json.push('"');
    json
}

/// Sends one HTTP/1.1 request with a JSON `body` to the API at `socket`; returns the response's
/// status code and its text (head and body).
fn api_request(socket: &Path, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the API socket {}", socket.display()))?;
    stream.set_read_timeout(Some(API_TIMEOUT))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).context("sending the request")?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    while !is_complete(&response) {
        match stream.read(&mut chunk).context("reading the response")? {
            0 => break,
            n => response.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    // "HTTP/1.1 204 No Content"
    let status = text.split_whitespace().nth(1).and_then(|code| code.parse().ok());
    let status = status.with_context(|| format!("no HTTP status in the response {text:?}"))?;
    Ok((status, text))
}

/// Whether `response` holds its whole head and the body its Content-Length announces.
fn is_complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    });
    body.len() >= length.unwrap_or(0)
}
