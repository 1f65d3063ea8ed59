//! The message the VM prints once booted.
//!
//! It lives in its own section at the end of the image. `cargo xtask image --message TEXT`
//! rewrites that area after linking with TEXT, CR LF and a NUL, so the code never depends on the
//! text and the image needs no rebuild for a new message. The default below is what a plain
//! build carries.

/// The default message, with the line ending and the terminator the xtask also writes.
#[used]
#[unsafe(link_section = ".message")]
static DEFAULT_MESSAGE: [u8; 15] = *b"Hello World!\r\n\0";

unsafe extern "C" {
    /// First byte of the message area, placed by the linker script.
    static __message: u8;
}

/// Calls `emit` with each byte of the message, up to (not including) the NUL.
#[inline(always)]
pub fn for_each_byte(mut emit: impl FnMut(u8)) {
    let mut byte = &raw const __message;
    loop {
        // SAFETY: the message area holds a NUL-terminated string (linker script and xtask), and
        // volatile keeps the compiler from assuming the default text.
        let value = unsafe { byte.read_volatile() };
        if value == 0 {
            return;
        }
        emit(value);
        // SAFETY: still inside the area: the NUL comes first.
        byte = unsafe { byte.add(1) };
    }
}
