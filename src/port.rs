//! x86 I/O ports: how the VM reaches the UART, the ACPI PM registers and PCI configuration space.
//!
//! Port I/O can reprogram any device, hence `unsafe`.

use core::arch::asm;

/// Reads a byte from `port` (`in al, dx`).
#[inline(always)]
pub unsafe fn inb(port: u16) -> u8 {
    let value;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a byte to `port` (`out dx, al`).
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port and the value.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 16-bit word from `port` (`in ax, dx`).
#[inline(always)]
pub unsafe fn inw(port: u16) -> u16 {
    let value;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in ax, dx", out("ax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 16-bit word to `port` (`out dx, ax`).
#[inline(always)]
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the port and the value.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 32-bit doubleword from `port` (`in eax, dx`).
#[inline(always)]
pub unsafe fn inl(port: u16) -> u32 {
    let value;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 32-bit doubleword to `port` (`out dx, eax`).
#[inline(always)]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the port and the value.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}
