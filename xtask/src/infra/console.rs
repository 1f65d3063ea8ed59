//! The console capture every launcher shares: a thread per output stream (COM1, stderr, a
//! control socket) appends what it reads to a buffer that the caller waits on
//! ([`wait_until_contains`]).

use std::io::{self, Read};
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes a reader thread collects, shared with whoever waits for them.
#[derive(Default)]
pub struct Captured {
    pub bytes: Mutex<Vec<u8>>,
    /// Notified each time `bytes` grows.
    pub grew: Condvar,
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

/// Starts a thread that appends everything `source` yields to a shared buffer.
pub fn capture(mut source: impl Read + Send + 'static) -> Arc<Captured> {
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

/// Whether `haystack` holds `needle` (an empty needle always).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

/// How long the reader threads need to drain a pipe once the process writing it has exited.
pub const DRAIN: Duration = Duration::from_millis(50);

#[cfg_attr(not(test), allow(dead_code))]
/// How a wait for bytes on a captured stream ended.
#[derive(Debug)]
pub enum Waited {
    /// The stream holds the bytes.
    Found,
    /// Not within the time allowed.
    TimedOut,
    /// The process that writes the stream exited first, with this status.
    Exited(ExitStatus),
}

#[cfg_attr(not(test), allow(dead_code))]
/// Waits up to `timeout` until `captured` holds `needle`, asking `exited` at least every 50 ms
/// whether the process that writes it (`Guarded::try_wait`) has gone.
pub fn wait_until_contains(
    captured: &Captured,
    needle: &[u8],
    timeout: Duration,
    mut exited: impl FnMut() -> io::Result<Option<ExitStatus>>,
) -> io::Result<Waited> {
    let deadline = Instant::now() + timeout;
    loop {
        let bytes = captured.bytes.lock().unwrap();
        let now = Instant::now();
        if contains(&bytes, needle) {
            return Ok(Waited::Found);
        }
        if now >= deadline {
            return Ok(Waited::TimedOut);
        }
        let wait = (deadline - now).min(Duration::from_millis(50));
        drop(captured.grew.wait_timeout(bytes, wait).unwrap());
        if let Some(status) = exited()? {
            // Its last bytes may still be in the pipe.
            thread::sleep(DRAIN);
            let found = contains(&captured.bytes.lock().unwrap(), needle);
            return Ok(if found { Waited::Found } else { Waited::Exited(status) });
        }
    }
}

/// "; `who` said: ..." with what `stderr` has carried, or nothing when it is empty.
pub fn said(who: &str, stderr: &Captured) -> String {
    let text = stderr.text();
    if text.trim().is_empty() { String::new() } else { format!("; {who} said: {}", text.trim()) }
}
