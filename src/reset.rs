//! Resetting the machine: what a VM does to end itself where ACPI gives no way to power off
//! (Firecracker, whose graceful stop is Ctrl-Alt-Del and which exits when the guest resets;
//! QEMU `microvm,acpi=off`). With `-no-reboot`, or in Firecracker, a reset ends the VM.

use core::arch::asm;

use crate::port::{inb, outb};

/// The 8042 keyboard controller's command port, and its "pulse the reset line" command.
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xFE;
/// How many status reads to wait for the 8042 reset to take before the next way.
const WAIT: u32 = 10_000;

/// Resets the machine: through the 8042, and where there is none (its reset is not taken), by a
/// triple fault, which every x86 machine turns into a reset.
pub fn reset() -> ! {
    // SAFETY: the 8042's command port; a reset is the point. Reading its status register while
    // waiting has no side effect.
    unsafe {
        outb(I8042_COMMAND, I8042_RESET);
        for _ in 0..WAIT {
            inb(I8042_COMMAND);
        }
    }
    triple_fault()
}

/// An empty interrupt table, then an exception (UD2's invalid opcode: a fault, which every
/// hypervisor delivers as such; an `int3` under an empty table stopped this machine's KVM with an
/// internal error instead): it cannot be delivered, nor can the double fault that follows, and
/// the CPU shuts down (a reset, on a PC).
fn triple_fault() -> ! {
    /// The LIDT operand: limit 0, base 0.
    #[repr(C, packed)]
    struct Empty {
        limit: u16,
        base: u64,
    }
    let empty = Empty { limit: 0, base: 0 };
    // SAFETY: the machine stops here; nothing runs after.
    unsafe {
        asm!("lidt [{0}]", "ud2", in(reg) &raw const empty, options(readonly, nostack));
    }
    crate::idle::halt()
}
