//! Idling: sleep in `hlt` until an interrupt, so that a waiting VM costs its host next to nothing,
//! and power off when asked to.

use core::arch::asm;

use crate::acpi::Pm;
use crate::serial;

/// Sleeps forever, waking on each interrupt (the 18.2 Hz timer tick) to check whether anyone
/// asked the VM to power off: the ACPI power button (`virsh shutdown`, QMP `system_powerdown`),
/// or a key on the console (a byte on COM1, or `keyboard` for the screen's keyboard). Without
/// ACPI (`pm` is `None`) it only sleeps: no crash, no reboot, no spinning. Execution never runs
/// past the loop into data.
#[inline(always)]
pub fn forever(pm: Option<Pm>, keyboard: impl Fn() -> bool) -> ! {
    loop {
        // STI enables interrupts only after the next instruction, so none can slip in between
        // and leave HLT waiting for the one after it.
        // SAFETY: enabling interrupts and halting touch no memory.
        unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
        if let Some(pm) = pm
            && (pm.power_button_pressed() || serial::received() || keyboard())
        {
            pm.power_off();
        }
    }
}

/// Stops for good: interrupts off, then `hlt` (in a loop, in case an NMI wakes it).
pub fn halt() -> ! {
    loop {
        // SAFETY: as above.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
