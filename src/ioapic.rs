//! The I/O APIC: where devices' interrupts enter on machines without an 8259 (Cloud Hypervisor,
//! Firecracker) and, once it is set up, on every modern PC. Each input (pin) has a redirection
//! entry naming the vector, the trigger mode and polarity, and the local APIC to send it to
//! (82093AA datasheet, 3.2).
//!
//! Two registers in memory: IOREGSEL picks an internal register, IOWIN reads or writes it.

/// IOREGSEL and IOWIN, from the I/O APIC's base address (the MADT names it).
const IOREGSEL: usize = 0x00;
const IOWIN: usize = 0x10;
/// Internal registers: the version (bits 16-23: the highest redirection entry) and the first
/// redirection entry (two 32-bit halves per input).
const VERSION: u32 = 0x01;
const REDIRECTION: u32 = 0x10;
/// Redirection entry, low half: masked (bit 16), level triggered (bit 15), active low (bit 13);
/// delivery mode fixed and physical destination (all zero).
const MASKED: u32 = 1 << 16;
const LEVEL: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

/// One I/O APIC, at its registers' address.
#[derive(Clone, Copy)]
pub struct IoApic {
    base: usize,
}

impl IoApic {
    /// The I/O APIC at `address`, if one answers there (nothing there reads all ones).
    pub fn at(address: u32) -> Option<IoApic> {
        let apic = IoApic { base: address as usize };
        (apic.read(VERSION) != u32::MAX).then_some(apic)
    }

    /// How many inputs it has.
    pub fn inputs(self) -> u32 {
        (self.read(VERSION) >> 16 & 0xFF) + 1
    }

    /// Masks every input: nothing arrives but what is routed after.
    pub fn mask_all(self) {
        for input in 0..self.inputs() {
            self.write(REDIRECTION + 2 * input, MASKED);
        }
    }

    /// Sends `input` to `vector` at the local APIC `destination`, unmasked.
    pub fn route(self, input: u32, vector: u8, level: bool, active_low: bool, destination: u8) {
        if input >= self.inputs() {
            return;
        }
        let mode = if level { LEVEL } else { 0 } | if active_low { ACTIVE_LOW } else { 0 };
        // The destination first, then the low half, which unmasks the entry.
        self.write(REDIRECTION + 2 * input + 1, u32::from(destination) << 24);
        self.write(REDIRECTION + 2 * input, u32::from(vector) | mode);
    }

    fn read(self, register: u32) -> u32 {
        // SAFETY: the I/O APIC's two registers, 32 bits at a time: select, then read the window.
        unsafe {
            self.pointer(IOREGSEL).write_volatile(register);
            self.pointer(IOWIN).read_volatile()
        }
    }

    fn write(self, register: u32, value: u32) {
        // SAFETY: as above: select, then write the window.
        unsafe {
            self.pointer(IOREGSEL).write_volatile(register);
            self.pointer(IOWIN).write_volatile(value);
        }
    }

    fn pointer(self, offset: usize) -> *mut u32 {
        core::ptr::with_exposed_provenance_mut(self.base + offset)
    }
}
