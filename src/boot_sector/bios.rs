//! BIOS services the boot sector uses (the ROM has no BIOS under it).

use core::arch::asm;

/// Prints `byte` on the screen at the cursor: INT 10h, AH=0Eh (teletype output), AL = the
/// character, BH = page 0, BL = colour (ignored in text mode).
pub fn teletype(byte: u8) {
    // SAFETY: a BIOS video call. PUSHAD/POPAD keep every register as it was, ESI and EBP
    // included (they cannot be asm operands on this target), whatever the video BIOS clobbers.
    unsafe {
        asm!(
            "pushad",
            "int 0x10",
            "popad",
            in("ax") 0x0E00 | byte as u16,
            in("bx") 0u16,
        )
    };
}
