//! The local APIC, which sits between the 8259 PIC and the CPU on every CPU model that has one.
//!
//! Out of reset it is enabled in its base MSR but software-disabled, with LINT0 (where the 8259
//! is wired) masked: the keyboard's, COM1's and the SCI's interrupts would never reach the CPU,
//! and `hlt` would sleep through the power button. A BIOS routes LINT0 as ExtINT ("virtual
//! wire"); so does the ROM. Plain memory writes: on a CPU with no local APIC (a 486) they reach
//! nothing.

/// Default physical address of the local APIC's registers (`asm/start.s` lets DS reach it).
const LAPIC_BASE: usize = 0xFEE0_0000;
/// Spurious interrupt vector register: bit 8 enables the APIC in software.
const SVR: usize = 0xF0;
/// Local vector table entries for the LINT0 and LINT1 pins.
const LVT_LINT0: usize = 0x350;
const LVT_LINT1: usize = 0x360;

/// SVR: APIC enabled, spurious vector 0xFF.
const SVR_ENABLED: u32 = 0x1FF;
/// LVT delivery mode ExtINT (bits 8-10 = 111): the 8259 supplies the vector.
const DELIVER_EXTINT: u32 = 0b111 << 8;
/// LVT delivery mode NMI (bits 8-10 = 100).
const DELIVER_NMI: u32 = 0b100 << 8;

/// Lets the 8259's interrupts through to the CPU (LINT0 ExtINT, LINT1 NMI), as a BIOS does.
pub fn pass_through_8259() {
    write(SVR, SVR_ENABLED);
    write(LVT_LINT0, DELIVER_EXTINT);
    write(LVT_LINT1, DELIVER_NMI);
}

/// Local vector table entry of the APIC's own timer.
const LVT_TIMER: usize = 0x320;
/// The timer's initial count: 0 stops it.
const TIMER_INITIAL_COUNT: usize = 0x380;
/// LVT bit 16: masked.
const LVT_MASKED: u32 = 1 << 16;

/// Stops the local APIC's timer, which UEFI firmware may have used for its tick: masked, and its
/// count 0, so that it neither interrupts nor keeps a host timer running.
pub fn stop_timer() {
    write(LVT_TIMER, LVT_MASKED);
    write(TIMER_INITIAL_COUNT, 0);
}

/// The timer's divide configuration register, and its value for "divide by 16".
const TIMER_DIVIDE: usize = 0x3E0;
const DIVIDE_BY_16: u32 = 0b0011;
/// The timer's current count (read only).
const TIMER_CURRENT_COUNT: usize = 0x390;

/// Starts the timer counting down from `count` (in units of 16 bus clocks) once, raising
/// `vector` when it reaches 0 (LVT timer mode bits 17-18 = 00: one-shot). A count of 0 stops it.
pub fn one_shot(vector: u8, count: u32) {
    write(TIMER_DIVIDE, DIVIDE_BY_16);
    write(LVT_TIMER, u32::from(vector));
    write(TIMER_INITIAL_COUNT, count);
}

/// Starts the timer counting down from the largest count, masked: a stopwatch for calibration.
pub fn start_stopwatch() {
    write(TIMER_DIVIDE, DIVIDE_BY_16);
    write(LVT_TIMER, LVT_MASKED);
    write(TIMER_INITIAL_COUNT, u32::MAX);
}

/// How far the stopwatch has counted down since [`start_stopwatch`].
pub fn stopwatch_elapsed() -> u32 {
    u32::MAX - read(TIMER_CURRENT_COUNT)
}

/// Task priority register: 0 lets every vector through.
const TPR: usize = 0x80;
/// The local APIC's ID register: the ID in bits 24-31.
const ID: usize = 0x20;

/// Takes interrupts from the I/O APIC rather than the 8259 (which is masked): enabled, priority
/// 0, LINT0 masked, LINT1 NMI.
pub fn accept_io_apic() {
    write(TPR, 0);
    write(SVR, SVR_ENABLED);
    write(LVT_LINT0, LVT_MASKED);
    write(LVT_LINT1, DELIVER_NMI);
}

/// This CPU's local APIC ID: where the I/O APIC sends its interrupts.
pub fn id() -> u8 {
    // SAFETY: the ID register, read 32 bits at a time.
    let value =
        unsafe { core::ptr::with_exposed_provenance::<u32>(LAPIC_BASE + ID).read_volatile() };
    (value >> 24) as u8
}

/// Reads a local APIC register.
#[inline(always)]
fn read(register: usize) -> u32 {
    // SAFETY: the local APIC's MMIO registers, 32-bit aligned, read 32 bits at a time.
    unsafe { core::ptr::with_exposed_provenance::<u32>(LAPIC_BASE + register).read_volatile() }
}

/// Writes a local APIC register.
#[inline(always)]
fn write(register: usize, value: u32) {
    // SAFETY: the local APIC's MMIO registers, 32-bit aligned, written 32 bits at a time; each
    // caller picks the register for what it means to change.
    unsafe {
        core::ptr::with_exposed_provenance_mut::<u32>(LAPIC_BASE + register).write_volatile(value)
    }
}
