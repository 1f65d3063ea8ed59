//! The 512-byte VM: the code every image shares, one module per piece of hardware: the boot
//! sector (`src/boot_sector/`), the flat BIOS ROM (`src/rom/`), and the 64-bit core
//! (`src/core64/`) with its two entries, the UEFI program (`src/efi/`) and the PVH kernel
//! (`src/pvh/`).
//!
//! The 16-bit images are built for `i386-code16-boot-sector.json`: LLVM's "code16", 32-bit
//! instructions that run in real mode behind operand- and address-size prefixes. Pointers are
//! 32-bit linear addresses; `src/asm/start.s` gives DS and ES a 4 GiB limit so that they reach
//! the whole address space. The UEFI program is built for `x86_64-unknown-uefi`, where the
//! firmware maps memory one to one: the same addresses reach the same tables and registers. The
//! PVH kernel is built for `x86_64-unknown-none` (static, linked at 1 MiB by `pvh.ld`); its
//! entry stub maps the first 4 GiB one to one.

#![no_std]
#![warn(unsafe_op_in_unsafe_fn)]

pub mod acpi;
#[cfg(target_arch = "x86_64")]
pub mod agent;
#[cfg(target_arch = "x86_64")]
pub mod clock;
#[cfg(target_arch = "x86_64")]
pub mod core64;
pub mod idle;
pub mod ioapic;
pub mod keyboard;
pub mod lapic;
pub mod message;
#[cfg(target_arch = "x86_64")]
pub mod net;
#[cfg(target_arch = "x86_64")]
pub mod nic;
#[cfg(target_arch = "x86_64")]
pub mod pci;
pub mod pic;
pub mod pit;
pub mod port;
pub mod reset;
#[cfg(target_arch = "x86_64")]
pub mod rtc;
pub mod serial;
pub mod vga;

// Segments, stack and unreal mode: the one piece of start-up both 16-bit images run.
#[cfg(target_arch = "x86")]
core::arch::global_asm!(include_str!("asm/start.s"));

/// Nothing on the boot path panics on purpose; if a bounds check ever fires, stop quietly. The
/// `PanicInfo` is ignored so that no formatting code is linked in.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    idle::halt()
}
