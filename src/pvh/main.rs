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

#[macro_use]
mod entry;
mod paging;
mod start_info;

use vm512::core64::Quiet;

kernel!(Quiet, stack: 16 * 1024);
