//! The console capture every launcher shares: a thread per output stream (COM1, stderr, a
//! control socket) appends what it reads to a buffer that the caller waits on.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

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
