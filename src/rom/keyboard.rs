//! The 8042 keyboard controller, polled: with no BIOS there is no keyboard buffer, and the PIC
//! leaves IRQ 1 masked, so a key simply waits in the controller's output buffer.

use vm512::port::inb;

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
