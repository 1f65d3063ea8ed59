//! The 8259 programmable interrupt controllers (master at 0x20, slave at 0xA0): which interrupts
//! reach the CPU. The VM waits for what it answers and nothing else: the keyboard (IRQ 1), COM1
//! (IRQ 4) and the ACPI SCI (the FADT's SCI_INT; IRQ 9 where QEMU, VirtualBox, VMware and Hyper-V
//! wire it on PIIX4 and ICH9), the slave's through the cascade (IRQ 2). No timer. Under a BIOS the
//! controllers are set up and only the masks change; under the ROM and the UEFI program they are
//! set up from scratch.

use core::arch::asm;

use crate::pit;
use crate::port::outb;

/// Master PIC command and data ports.
const MASTER_COMMAND: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
/// Slave PIC command and data ports.
const SLAVE_COMMAND: u16 = 0xA0;
const SLAVE_DATA: u16 = 0xA1;

/// ICW1: edge triggered, cascaded, an ICW4 follows.
const ICW1_INIT: u8 = 0x11;
/// ICW4: 8086 mode (bit 0) with automatic end of interrupt (bit 1): handlers need no EOI.
const ICW4_8086_AUTO_EOI: u8 = 0x03;
/// Vector bases in real mode, where a BIOS puts them: IRQ 0-7 at 08h, IRQ 8-15 at 70h.
pub const REAL_MODE_VECTORS: [u8; 2] = [0x08, 0x70];
/// Vector bases in long mode: right above the 32 exception vectors, IRQ 0-7 at 20h, 8-15 at 28h.
pub const LONG_MODE_VECTORS: [u8; 2] = [0x20, 0x28];

/// The IRQ lines the VM wakes for.
const KEYBOARD: u8 = 1;
const CASCADE: u8 = 2;
const COM1: u8 = 4;
/// The SCI's line as the boot sector takes it, without reading SCI_INT (bytes): IRQ 9, as on
/// every platform we know. Elsewhere the power button would go unanswered there; the keyboard
/// and Ctrl-D still work.
const BIOS_SCI: u8 = 9;

/// The master's mask (OCW1; a set bit masks its line) with the keyboard, the cascade and COM1
/// open.
const MASTER_MASK: u8 = !(1 << KEYBOARD | 1 << CASCADE | 1 << COM1);
/// The slave's mask with the boot sector's SCI line open.
const SLAVE_MASK: u8 = !(1 << (BIOS_SCI - 8));

/// Both masks with the keyboard, the cascade, COM1 and `sci` open (`acpi::NO_SCI`, or any line
/// above 15: no SCI line).
const fn masks(sci: u8) -> [u8; 2] {
    match sci {
        0..8 => [MASTER_MASK & !(1 << sci), 0xFF],
        8..16 => [MASTER_MASK, !(1 << (sci - 8))],
        _ => [MASTER_MASK, 0xFF],
    }
}

/// The boot sector's master mask is the PIT's mode word (one `mov al` for both): it opens the
/// keyboard, the cascade and COM1, and masks the timer; it leaves IRQ 6 (the floppy controller,
/// silent unless given a command) and IRQ 7 (where the 8259 puts its spurious interrupts, masked
/// or not) open too, and masks IRQ 3 and 5.
const BIOS_MASTER_MASK: u8 = pit::CHANNEL0_ONE_SHOT;
const _: () = assert!(BIOS_MASTER_MASK & !MASTER_MASK == 0, "keyboard, cascade, COM1 stay open");
const _: () = assert!(!BIOS_MASTER_MASK & MASTER_MASK & 0x3F == 0, "no line but 6 and 7 opened");
const _: () = assert!(BIOS_MASTER_MASK & (1 << 0) != 0, "the timer stays masked");

/// Under a BIOS: stops the PIT's tick and opens only the lines the VM answers (the BIOS has a
/// handler for every line that sends the end of interrupt, and its keyboard handler fills the
/// BDA). The masks are written whole, not read and changed: 12 bytes for the timer and both
/// masks.
#[inline(always)]
pub fn stop_the_tick_and_wait_for_events_under_bios() {
    // SAFETY: the PIT's ports, mode word then count, as `pit::stop` writes them; then the PICs'
    // mask registers (OCW1). One asm block, so that AL is loaded once for three writes.
    unsafe {
        asm!(
            "out {command}, al",
            "out {channel0}, al",
            "out {master}, al",
            "mov al, {slave_mask}",
            "out {slave}, al",
            command = const pit::COMMAND,
            channel0 = const pit::CHANNEL0,
            master = const MASTER_DATA as u8,
            slave = const SLAVE_DATA as u8,
            slave_mask = const SLAVE_MASK,
            inout("al") BIOS_MASTER_MASK => _,
            options(nomem, nostack, preserves_flags),
        )
    };
}

/// OCW2: non-specific end of interrupt: clears the highest-priority in-service bit, if any.
const NON_SPECIFIC_EOI: u8 = 0x20;

/// Ends whatever interrupt the master 8259 still has in service. The idle loop does this before
/// every sleep: an interrupt left in service blocks every line of its priority and below, so the
/// VM would never wake again. SeaBIOS's `microvm` build leaves the 8259 uninitialised (vectors
/// from 0, no end of interrupt from its handlers): there the timer's last interrupt stays in
/// service and COM1's would after it. Elsewhere (a BIOS's handlers end their interrupts; the ROM
/// and the UEFI program run the 8259s in auto-EOI mode) nothing is in service and this does
/// nothing. 4 bytes.
#[inline(always)]
pub fn end_any_interrupt() {
    // SAFETY: OCW2 to the master's command port; no memory.
    unsafe {
        asm!(
            "out {command}, al",
            command = const MASTER_COMMAND as u8,
            in("al") NON_SPECIFIC_EOI,
            options(nomem, nostack, preserves_flags),
        )
    };
}

/// Where the I/O APIC delivers instead (the PVH image on a machine that has one): initialises
/// both PICs with `vectors` (so that a stray interrupt lands on no exception vector) and masks
/// every line.
pub fn disable(vectors: [u8; 2]) {
    wait_for_events(vectors, crate::acpi::NO_SCI);
    // SAFETY: OCW1 to both PICs: every line masked.
    unsafe {
        outb(MASTER_DATA, 0xFF);
        outb(SLAVE_DATA, 0xFF);
    }
}

/// Opens line `irq` (0-15) too, after [`wait_for_events`]: a device's line the VM also answers
/// (a virtio-mmio card's, QEMU `microvm,acpi=off`).
pub fn open(irq: u8) {
    let (port, bit) = if irq < 8 { (MASTER_DATA, irq) } else { (SLAVE_DATA, irq - 8) };
    // SAFETY: OCW1 to a PIC's data port, read back and changed by one bit.
    unsafe { outb(port, crate::port::inb(port) & !(1 << (bit & 7))) };
}

/// Without a BIOS (the ROM, and the UEFI program once boot services are gone): initialises both
/// PICs with the master's and the slave's vector bases, in auto-EOI mode (handlers need no end of
/// interrupt), and opens only the lines the VM answers, the SCI on line `sci` (`Pm::sci`).
pub fn wait_for_events([master_vectors, slave_vectors]: [u8; 2], sci: u8) {
    let [master_mask, slave_mask] = masks(sci);
    // SAFETY: the PICs' own ports, in the documented initialisation order (ICW1-ICW4, then the
    // mask, OCW1). Interrupts stay disabled until the idle loop.
    unsafe {
        outb(MASTER_COMMAND, ICW1_INIT);
        outb(SLAVE_COMMAND, ICW1_INIT);
        outb(MASTER_DATA, master_vectors); // ICW2
        outb(SLAVE_DATA, slave_vectors);
        outb(MASTER_DATA, 1 << CASCADE); // ICW3: a slave hangs on IRQ 2
        outb(SLAVE_DATA, CASCADE); // ICW3: the slave's cascade identity
        outb(MASTER_DATA, ICW4_8086_AUTO_EOI);
        outb(SLAVE_DATA, ICW4_8086_AUTO_EOI);
        outb(MASTER_DATA, master_mask); // OCW1
        outb(SLAVE_DATA, slave_mask);
    }
}
