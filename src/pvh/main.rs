//! The PVH kernel (`512-byte-vm.pvh`): the same VM for VMMs that boot a kernel rather than a disk
//! (QEMU `-kernel`, `microvm`, Cloud Hypervisor, Firecracker).
//!
//! Boot flow: the VMM loads this ELF at 1 MiB and enters `asm/pvh.s` in 32-bit protected mode
//! with EBX pointing at `hvm_start_info`; the stub maps the first 4 GiB, enters long mode and
//! calls `pvh_main`. That reads what the loader left (the RSDP; the memory map, which says
//! whether 0xB8000 is a text screen), shows the message on the screen where there is one, and
//! hands the machine to the 64-bit core with all of its reach: the I/O APIC, hardware-reduced
//! ACPI and its Generic Event Device, and a reset where ACPI gives no way to power off.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod paging;
mod start_info;

use vm512::core64::{self, Reach};
use vm512::{message, vga};

core::arch::global_asm!(include_str!("../asm/pvh.s"), serial_init = sym vm512::serial::INIT);

/// Where a BIOS leaves the RSDP when the loader names none: a 16-byte boundary in 0xE0000-0xFFFFF.
const BIOS_AREA: core::ops::Range<u64> = 0xE_0000..0x10_0000;

/// The VGA text buffer's address: a screen only where the memory map does not call it RAM.
const VGA_TEXT: u64 = 0xB_8000;

/// Called by `asm/pvh.s` in long mode, with the start info's physical address.
#[unsafe(no_mangle)]
extern "C" fn pvh_main(start_info: u32) -> ! {
    let info = start_info::at(start_info);
    let rsdp = info.and_then(|info| info.rsdp()).or_else(rsdp_in_bios_area);
    let screen = info.and_then(|info| info.is_ram(VGA_TEXT)) == Some(false) && vga::present();
    if screen {
        let mut screen = vga::Screen::below_the_bios();
        message::for_each_byte(|byte| screen.put(byte));
    }
    core64::run::<Pvh>(rsdp)
}

/// Any x86 VMM, with the stub's page tables.
struct Pvh;
impl Reach for Pvh {
    const ANY_MACHINE: bool = true;
    const LINE_PRINTED: bool = true;

    fn map_device(address: u64) -> bool {
        paging::map_device(address)
    }
}

/// "RSD PTR " on a 16-byte boundary in the BIOS area (identity mapped), for loaders that leave
/// `rsdp_paddr` 0.
fn rsdp_in_bios_area() -> Option<u64> {
    BIOS_AREA.step_by(16).find(|&at| {
        // SAFETY: BIOS memory, mapped one to one; read only.
        let bytes = unsafe { core::ptr::with_exposed_provenance::<[u8; 8]>(at as usize).read() };
        &bytes == b"RSD PTR "
    })
}
