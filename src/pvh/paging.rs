//! Mapping device registers that lie above the 4 GiB the entry stub maps: Cloud Hypervisor puts
//! its Generic Event Device's register at the top of the guest's physical address space
//! (0x3FFF_FFFE_D000 on this machine's CPUs). One 2 MiB page, uncached, from the spare tables
//! `asm/pvh.s` reserves: enough for the one register the core asks for.

use core::arch::asm;

unsafe extern "C" {
    /// `asm/pvh.s`: the page tables (512 entries each).
    static mut vm512_page_map_level4: [u64; 512];
    static mut vm512_page_directory_pointers: [u64; 512];
    static mut vm512_spare_page_directory_pointers: [u64; 512];
    static mut vm512_spare_page_directory: [u64; 512];
}

/// Entry bits: present, writable; page size (a 2 MiB page); write-through and cache-disable.
const PRESENT_WRITABLE: u64 = 0x3;
const LARGE_UNCACHED: u64 = 0x80 | 0x18;
/// Bits 12-51: the next table's or the page's address.
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
/// What the stub maps: the first 4 GiB.
const MAPPED: u64 = 1 << 32;
/// 4-level paging reaches 256 TiB (48 bits).
const REACH: u64 = 1 << 48;

/// Makes `address` reachable (identity mapped); `false` if it cannot be (beyond 48 bits, or the
/// spare tables already serve another region).
pub fn map_device(address: u64) -> bool {
    if address < MAPPED {
        return true;
    }
    if address >= REACH {
        return false;
    }
    let index = |shift: u32| (address >> shift & 511) as usize;
    // SAFETY: the stub's tables, ours alone; interrupts are off, one CPU runs.
    unsafe {
        let level4 = &mut *(&raw mut vm512_page_map_level4);
        let spare_pointers = &raw mut vm512_spare_page_directory_pointers;
        let spare_directory = &raw mut vm512_spare_page_directory;
        // The pointer table for this 512 GiB: the stub's own (the first), or the spare one.
        let unused = |table: *mut [u64; 512]| (*table).iter().all(|&entry| entry == 0);
        let pointers: *mut [u64; 512] = match level4[index(39)] & ADDRESS {
            0 if !unused(spare_pointers) => return false,
            0 => {
                level4[index(39)] = spare_pointers as u64 | PRESENT_WRITABLE;
                spare_pointers
            }
            table if table == spare_pointers as u64 => spare_pointers,
            _ => &raw mut vm512_page_directory_pointers,
        };
        let pointers = &mut *pointers;
        match pointers[index(30)] & ADDRESS {
            0 if !unused(spare_directory) => return false,
            0 => pointers[index(30)] = spare_directory as u64 | PRESENT_WRITABLE,
            table if table == spare_directory as u64 => {}
            _ => return false,
        }
        let directory = &mut *spare_directory;
        let page = address & !((1 << 21) - 1);
        match directory[index(21)] & ADDRESS {
            0 => directory[index(21)] = page | PRESENT_WRITABLE | LARGE_UNCACHED,
            mapped if mapped == page => {}
            _ => return false,
        }
        // A new mapping needs no flush, but reloading CR3 costs nothing here and leaves no doubt.
        asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack));
    }
    true
}
