//! The 8042 keyboard controller, polled: with no BIOS (the ROM, and the UEFI program once boot
//! services are gone) there is no keyboard buffer, and the PIC leaves IRQ 1 masked, so a key
//! simply waits in the controller's output buffer.

use crate::port::inb;

/// Status port.
const STATUS: u16 = 0x64;
/// Status bit 0: the output buffer holds a byte.
const OUTPUT_FULL: u8 = 1 << 0;
/// Status bit 5: that byte came from the mouse, not the keyboard.
const FROM_MOUSE: u8 = 1 << 5;

/// Whether a key press (or release) is waiting.
pub fn key_waiting() -> bool {
    // SAFETY: reading the status register has no side effect.
    let status = unsafe { inb(STATUS) };
    status & (OUTPUT_FULL | FROM_MOUSE) == OUTPUT_FULL
}

/// Data port.
const DATA: u16 = 0x60;

/// Empties the controller's output buffer of whatever firmware left there, so that only a key
/// pressed from now on counts.
pub fn discard_pending() {
    // SAFETY: reading the status and data registers; a byte read is consumed, as intended.
    unsafe {
        for _ in 0..16 {
            if inb(STATUS) & OUTPUT_FULL == 0 {
                break;
            }
            inb(DATA);
        }
    }
}
