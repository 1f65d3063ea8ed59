//! The 8254 programmable interval timer, channel 0. QEMU's comes out of reset ticking at 18.2 Hz
//! (mode 3, count 65536), and KVM's in-kernel one keeps its host timer running even when IRQ 0
//! is masked at the PIC. The ROM needs no tick: it stops it.

use vm512::port::outb;

/// Mode/command port.
const COMMAND: u16 = 0x43;
/// Channel 0, low byte then high byte, mode 0 (interrupt on terminal count: one-shot), binary.
/// Written without a count, the counter waits for one and never fires.
const CHANNEL0_ONE_SHOT: u8 = 0b00_11_000_0;

/// Stops channel 0: no periodic tick.
pub fn stop() {
    // SAFETY: the PIT's command port; a mode word alone stops the channel until a count comes.
    unsafe { outb(COMMAND, CHANNEL0_ONE_SHOT) };
}
