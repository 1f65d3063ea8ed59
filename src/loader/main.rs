//! The net family's BIOS loader (`asm/loader.s`): sector 0 of the net disks and the first
//! sector of the net CD's boot image. All of it is assembly; it brings the net PVH kernel into
//! memory and enters it as a PVH loader would, so that the BIOS path runs the same 64-bit core
//! as `-kernel` and UEFI.

#![no_std]
#![no_main]

// The panic handler every image shares (nothing here panics).
use vm512 as _;

core::arch::global_asm!(include_str!("../asm/loader.s"));
