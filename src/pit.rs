//! The 8254 programmable interval timer, channel 0: the periodic tick on IRQ 0.

use crate::port::outb;

/// Channel 0 data port.
const CHANNEL0: u16 = 0x40;
/// Mode/command port.
const COMMAND: u16 = 0x43;
/// Channel 0, low byte then high byte, mode 3 (square wave), binary.
const CHANNEL0_SQUARE_WAVE: u8 = 0b00_11_011_0;
/// Reload value 0 means 65536: 1.193182 MHz / 65536 = 18.2 Hz, the BIOS's tick.
const BIOS_TICK_DIVISOR: u16 = 0;

/// Starts the 18.2 Hz tick that wakes the idle loop.
pub fn start_system_tick() {
    let [low, high] = BIOS_TICK_DIVISOR.to_le_bytes();
    // SAFETY: the PIT's own ports, in the documented order: mode, then the reload value.
    unsafe {
        outb(COMMAND, CHANNEL0_SQUARE_WAVE);
        outb(CHANNEL0, low);
        outb(CHANNEL0, high);
    }
}
