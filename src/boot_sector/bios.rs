//! BIOS services the boot sector uses (the ROM has no BIOS under it).

use core::arch::asm;

/// Prints `byte` on the screen at the cursor: INT 10h, AH=0Eh (teletype output), AL = the
/// character, BH = page 0, BL = colour (ignored in text mode).
#[inline(always)]
pub fn teletype(byte: u8) {
    // SAFETY: a BIOS video call. PUSHAD/POPAD keep every register as it was, ESI and EBP
    // included (they cannot be asm operands on this target), whatever the video BIOS clobbers;
    // AH and BX are set inside, where they cost fewer bytes than as operands.
    unsafe {
        asm!(
            "pushad",
            "mov ah, 0x0E",
            "xor bx, bx",
            "int 0x10",
            "popad",
            in("al") byte,
        )
    };
}

/// BIOS data area: the keyboard buffer's head and tail offsets. The BIOS's IRQ 1 handler stores
/// each key there; head != tail means a key is waiting.
const KEYBOARD_HEAD: usize = 0x41A;
const KEYBOARD_TAIL: usize = 0x41C;

/// Whether a key is waiting in the BIOS keyboard buffer (read directly: cheaper than INT 16h).
#[inline(always)]
pub fn key_waiting() -> bool {
    let read = |address| {
        // SAFETY: the BIOS data area is RAM the BIOS keeps up to date.
        unsafe { core::ptr::with_exposed_provenance::<u16>(address).read_volatile() }
    };
    read(KEYBOARD_HEAD) != read(KEYBOARD_TAIL)
}
