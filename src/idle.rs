//! Idling: sleep in `hlt` until an interrupt, so that a waiting VM costs its host next to nothing,
//! and power off when asked to.

use core::arch::asm;

use crate::acpi::Pm;
use crate::{pic, serial};

/// Ctrl-D on the serial console: end of input, the one byte that powers the VM off.
const CTRL_D: u8 = 0x04;

/// Sleeps forever, waking only for an interrupt (the keyboard, COM1 or the ACPI SCI: no timer
/// ticks; see `pic`) to answer the console and to check whether anyone asked the VM to power off.
/// Every byte that arrives on COM1 (where there is a UART) is echoed back, so a harness can prove
/// the console works both ways; Ctrl-D on COM1, a key on the screen's keyboard (`keyboard`) and
/// the ACPI power button (`virsh shutdown`, QMP `system_powerdown`) power the VM off. Without
/// ACPI (`pm` is `NO_PM`) it only sleeps and echoes: no crash, no reboot, no spinning. Execution
/// never runs past the loop into data.
#[inline(always)]
pub fn forever(pm: Pm, keyboard: impl Fn() -> bool) -> ! {
    loop {
        // STI enables interrupts only after the next instruction, so none can slip in between
        // and leave HLT waiting for the one after it. CLI after the wake-up: what arrives while
        // the loop looks (a byte on COM1 whose interrupt was already taken, say) stays pending
        // until the next STI and wakes that HLT at once, instead of being taken now and slept
        // through.
        // Nothing left in service at the 8259 may keep an interrupt from waking the HLT.
        pic::end_any_interrupt();
        // SAFETY: enabling and disabling interrupts and halting touch no memory.
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        let mut off = keyboard() || pm.power_button_pressed();
        // Every byte that is there: the UART raises its interrupt once for all of them.
        while let Some(byte) = serial::received() {
            if byte == CTRL_D {
                off = true;
            } else {
                serial::write(byte);
            }
        }
        if off {
            pm.power_off();
        }
    }
}

/// The core's idle loop: as [`forever`], with `asked` saying whether someone asked the VM to
/// power off (a key, the power button) and `power_off` doing it however the machine does.
pub fn until_asked(asked: impl Fn() -> bool, power_off: impl Fn()) -> ! {
    serve_until_asked((), |_| {}, asked, |_| power_off())
}

/// As [`until_asked`], with a service beside the console: `work` runs on `service` before the
/// first sleep and after every wake-up (it arms whatever alarm it needs itself), and
/// `power_off` gets the service too, to end it before the VM goes.
#[inline(always)]
pub fn serve_until_asked<S>(
    mut service: S,
    work: impl Fn(&mut S),
    asked: impl Fn() -> bool,
    power_off: impl Fn(&mut S),
) -> ! {
    loop {
        work(&mut service);
        pic::end_any_interrupt();
        // SAFETY: as in `forever`.
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        let asked = asked();
        if echo_waiting() || asked {
            power_off(&mut service);
        }
    }
}

/// Echoes every byte waiting on COM1 (the UART raises its interrupt once for all of them);
/// returns whether Ctrl-D was among them.
pub fn echo_waiting() -> bool {
    let mut ctrl_d = false;
    while let Some(byte) = serial::received() {
        if byte == CTRL_D {
            ctrl_d = true;
        } else {
            serial::write(byte);
        }
    }
    ctrl_d
}

/// Stops for good: interrupts off, then `hlt` (in a loop, in case an NMI wakes it).
pub fn halt() -> ! {
    loop {
        // SAFETY: as above.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
