//! The message the VM prints once booted.
//!
//! It lives in its own section (`.message`) at the end of each image. `cargo xtask image
//! --message TEXT` rewrites that area after linking with TEXT, CR LF and an end mark, so the code
//! never depends on the text and no image needs a rebuild for a new message.
//!
//! Zero bytes in the area are skipped: the boot sector's area runs across the MBR partition slots
//! that a GPT disk's protective MBR leaves unused, whose type bytes must stay 0 (see `linker.ld`),
//! and the text flows around them. The first byte with bit 7 set ends the message (the text is
//! printable ASCII, so no byte of it has that bit).

/// The byte the xtask writes after the message's CR LF.
pub const END: u8 = 0xFF;

/// Bytes of the area in the 64-bit images (the UEFI program, the PVH kernel): room for any
/// message the boot sector takes. (In the 16-bit images the area runs to what the linker script
/// leaves.)
#[cfg(target_arch = "x86_64")]
pub const ROOM: usize = 128;
#[cfg(not(target_arch = "x86_64"))]
const ROOM: usize = 15;

/// The default message, with the line ending and the end mark the xtask also writes.
#[used]
#[unsafe(link_section = ".message")]
static MESSAGE: [u8; ROOM] = default_message();

const fn default_message() -> [u8; ROOM] {
    let text = b"Hello World!\r\n";
    let mut area = [0; ROOM];
    let mut i = 0;
    while i < text.len() {
        area[i] = text[i];
        i += 1;
    }
    area[i] = END;
    area
}

/// Calls `emit` with each byte of the message: every byte of the area up to the end mark, but
/// the zeros.
#[inline(always)]
pub fn for_each_byte(mut emit: impl FnMut(u8)) {
    let mut byte = MESSAGE.as_ptr();
    loop {
        // SAFETY: inside the message area, whose end mark comes first; volatile keeps the
        // compiler from assuming the default text, which the xtask replaces.
        let value = unsafe { byte.read_volatile() };
        if value & 0x80 != 0 {
            return;
        }
        if value != 0 {
            emit(value);
        }
        // SAFETY: still inside the area: the end mark comes first.
        byte = unsafe { byte.add(1) };
    }
}
