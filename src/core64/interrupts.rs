//! The interrupt descriptor table, ours once boot services are gone: the firmware's handlers
//! live in memory it no longer owns, and its timer driver is stopped.
//!
//! 256 gates (Intel SDM vol. 3, 6.14.1): the 32 exception vectors go to a handler that halts,
//! NMI and the local APIC's spurious vector to a bare `iretq`, the rest (the 8259s' IRQs at
//! `pic::LONG_MODE_VECTORS`, the I/O APIC's at [`IO_APIC_VECTORS`]) to one that ends the
//! interrupt at the local APIC and returns.

use core::arch::asm;

core::arch::global_asm!(include_str!("../asm/core64.s"));

unsafe extern "C" {
    /// `asm/core64.s`: `iretq`.
    fn vm512_interrupt_return();
    /// `asm/core64.s`: EOI at the local APIC, `iretq`.
    fn vm512_interrupt_end();
    /// `asm/core64.s`: `cli; hlt` forever.
    fn vm512_exception_halt();
}

/// Vectors 0-31 are the CPU's exceptions.
const EXCEPTIONS: usize = 32;
/// NMI: an event, not an error; returned from like an interrupt.
const NMI: usize = 2;
/// The local APIC's spurious vector (`lapic::SVR_ENABLED`): never ended.
const SPURIOUS: usize = 0xFF;
/// Where the I/O APIC's inputs are sent: one vector each from here, above the 8259s'.
pub const IO_APIC_VECTORS: u8 = 0x40;
/// Gate type and attributes: present (bit 7), DPL 0, type 0xE (64-bit interrupt gate: IF is
/// cleared on entry).
const INTERRUPT_GATE: u8 = 0x8E;

/// One 16-byte long-mode gate descriptor.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    /// Handler address, bits 0-15.
    offset_low: u16,
    /// Code segment selector the handler runs in.
    selector: u16,
    /// Interrupt stack table index (0: stay on the current stack).
    ist: u8,
    /// Present, privilege level and gate type.
    attributes: u8,
    /// Handler address, bits 16-31.
    offset_middle: u16,
    /// Handler address, bits 32-63.
    offset_high: u32,
    reserved: u32,
}

const EMPTY: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_middle: 0,
    offset_high: 0,
    reserved: 0,
};

static mut IDT: [Gate; 256] = [EMPTY; 256];

/// The LIDT operand: limit (size - 1), then the linear base.
#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fills the table and loads it. Interrupts must be off (they are after ExitBootServices and
/// at the PVH entry).
pub fn install() {
    let selector: u16;
    // SAFETY: reads CS, the code segment the firmware runs us in; its GDT stays where it is.
    unsafe { asm!("mov {0:x}, cs", out(reg) selector, options(nomem, nostack, preserves_flags)) };
    // SAFETY: nothing else touches the table; interrupts are off until the idle loop.
    let idt = unsafe { &mut *(&raw mut IDT) };
    for (vector, gate) in idt.iter_mut().enumerate() {
        let handler = match vector {
            NMI | SPURIOUS => vm512_interrupt_return as *const () as usize,
            v if v < EXCEPTIONS => vm512_exception_halt as *const () as usize,
            _ => vm512_interrupt_end as *const () as usize,
        };
        *gate = Gate {
            offset_low: handler as u16,
            selector,
            ist: 0,
            attributes: INTERRUPT_GATE,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    let pointer =
        Pointer { limit: (size_of::<[Gate; 256]>() - 1) as u16, base: idt.as_ptr() as u64 };
    // SAFETY: the table is static and complete.
    unsafe {
        asm!("lidt [{0}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags))
    };
}
