//! What a PVH loader leaves for the kernel: `struct hvm_start_info` (Xen's public header
//! `arch-x86/hvm/start_info.h`), at the physical address in EBX at the entry.

/// `hvm_start_info`, version 0 fields and the version 1 memory map.
#[repr(C)]
pub struct StartInfo {
    /// [`MAGIC`].
    pub magic: u32,
    /// 0, or 1 with the memory map fields.
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    /// The command line, NUL-terminated (0: none).
    pub cmdline_paddr: u64,
    /// The ACPI RSDP (0: the loader names none).
    pub rsdp_paddr: u64,
    /// Version 1: the memory map, `memmap_entries` of [`MemoryMapEntry`].
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

/// `hvm_memmap_table_entry`: one range of the memory map.
#[repr(C)]
pub struct MemoryMapEntry {
    pub address: u64,
    pub size: u64,
    /// [`RAM`], reserved, ACPI, ...: the E820 types.
    pub kind: u32,
    pub reserved: u32,
}

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const MAGIC: u32 = 0x336E_C578;
/// E820 type 1: usable RAM.
pub const RAM: u32 = 1;
/// The most memory map entries looked at.
const MAX_ENTRIES: u32 = 128;

/// The start info at `address`, if it carries the magic value.
pub fn at(address: u32) -> Option<&'static StartInfo> {
    // SAFETY: the loader's structure, identity mapped; read only.
    let info = unsafe { &*core::ptr::with_exposed_provenance::<StartInfo>(address as usize) };
    (address != 0 && info.magic == MAGIC).then_some(info)
}

impl StartInfo {
    /// The RSDP, if the loader named one.
    pub fn rsdp(&self) -> Option<u64> {
        (self.rsdp_paddr != 0).then_some(self.rsdp_paddr)
    }

    /// Whether the memory map says `address` is usable RAM (`None` without a map).
    pub fn is_ram(&self, address: u64) -> Option<bool> {
        if self.version < 1 || self.memmap_paddr == 0 || self.memmap_paddr >= 1 << 32 {
            return None;
        }
        let entries = self.memmap_entries.min(MAX_ENTRIES) as usize;
        // SAFETY: the loader's map of `memmap_entries` entries, identity mapped; read only.
        let map = unsafe {
            core::slice::from_raw_parts(
                core::ptr::with_exposed_provenance::<MemoryMapEntry>(self.memmap_paddr as usize),
                entries,
            )
        };
        Some(map.iter().any(|entry| {
            entry.kind == RAM && entry.address <= address && address - entry.address < entry.size
        }))
    }
}
