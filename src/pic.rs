//! The 8259 programmable interrupt controllers (master at 0x20, slave at 0xA0): no BIOS has set
//! them up under the ROM, and UEFI firmware leaves them as its own timer driver wanted.

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

/// Initialises both PICs with the master's and the slave's vector bases and unmasks IRQ 0 (the
/// PIT) alone.
pub fn deliver_only_the_timer([master_vectors, slave_vectors]: [u8; 2]) {
    // SAFETY: the PICs' own ports, in the documented initialisation order (ICW1-ICW4, then the
    // mask, OCW1). Interrupts stay disabled until the idle loop.
    unsafe {
        outb(MASTER_COMMAND, ICW1_INIT);
        outb(SLAVE_COMMAND, ICW1_INIT);
        outb(MASTER_DATA, master_vectors); // ICW2
        outb(SLAVE_DATA, slave_vectors);
        outb(MASTER_DATA, 1 << 2); // ICW3: a slave hangs on IRQ 2
        outb(SLAVE_DATA, 2); // ICW3: the slave's cascade identity
        outb(MASTER_DATA, ICW4_8086_AUTO_EOI);
        outb(SLAVE_DATA, ICW4_8086_AUTO_EOI);
        outb(MASTER_DATA, !1); // OCW1: mask all but IRQ 0
        outb(SLAVE_DATA, 0xFF); // mask all
    }
}
