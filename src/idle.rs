//! Idling: sleep in `hlt` until an interrupt, so that a waiting VM costs its host next to nothing.

use core::arch::asm;

/// Sleeps forever, waking on each interrupt (the BIOS timer, 18.2 times a second) only to sleep
/// again: execution never runs past the loop into data.
pub fn forever() -> ! {
    loop {
        // STI enables interrupts only after the next instruction, so none can slip in between
        // and leave HLT waiting for the one after it.
        // SAFETY: enabling interrupts and halting touch no memory.
        unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
    }
}

/// Stops for good: interrupts off, then `hlt` (in a loop, in case an NMI wakes it).
pub fn halt() -> ! {
    loop {
        // SAFETY: as above.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
