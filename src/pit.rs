//! The 8254 programmable interval timer, channel 0. QEMU's comes out of reset ticking at 18.2 Hz
//! (mode 3, count 65536), and a BIOS keeps it so. The VM needs no tick: it stops it by putting
//! channel 0 in one-shot mode with a count. (A mode word alone is not enough: KVM's in-kernel
//! PIT keeps its periodic host timer until a new count is loaded, even with IRQ 0 masked.)

use core::arch::asm;

/// Mode/command port.
const COMMAND: u8 = 0x43;
/// Channel 0 data port.
const CHANNEL0: u8 = 0x40;
/// Channel 0, low byte only, mode 0 (interrupt on terminal count: one-shot), binary. The same
/// byte then serves as the count: 0x10 ticks (13 µs), one last interrupt, then none (2 bytes
/// fewer than a separate count).
const CHANNEL0_ONE_SHOT: u8 = 0b00_01_000_0;

/// Stops channel 0: no periodic tick.
#[inline(always)]
pub fn stop() {
    // SAFETY: the PIT's own ports, in the documented order: mode, then the count. (The short
    // `out imm8, al` form and one AL for both: 6 bytes.)
    unsafe {
        asm!(
            "out {command}, al",
            "out {channel0}, al",
            command = const COMMAND,
            channel0 = const CHANNEL0,
            in("al") CHANNEL0_ONE_SHOT,
            options(nomem, nostack, preserves_flags),
        )
    };
}
