//! The 512-byte VM: the code both images share, the boot sector (`src/boot_sector/`) and the
//! flat BIOS ROM.
//!
//! Built for `i386-code16-boot-sector.json`: LLVM's "code16", 32-bit instructions that run in
//! real mode behind operand- and address-size prefixes. Pointers are 32-bit linear addresses;
//! `src/asm/start.s` gives DS and ES a 4 GiB limit so that they reach the whole address space.

#![no_std]
#![warn(unsafe_op_in_unsafe_fn)]

pub mod acpi;
pub mod idle;
pub mod message;
pub mod port;
pub mod serial;

// Segments, stack and unreal mode: the one piece of start-up both images run.
core::arch::global_asm!(include_str!("asm/start.s"));

/// Nothing on the boot path panics on purpose; if a bounds check ever fires, stop quietly. The
/// `PanicInfo` is ignored so that no formatting code is linked in.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    idle::halt()
}
