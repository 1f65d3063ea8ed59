//! COM1, the 16550 UART at I/O port 0x3F8: the line test harnesses read.
//!
//! QEMU prints whatever is written to the data port, programmed or not; a real 16550 (and other
//! emulators) powers up with no baud rate, so program it before the first byte and wait for the
//! transmitter before each one.

#[cfg(target_arch = "x86")]
use core::arch::asm;

use crate::port::{inb, outb};

/// Base I/O port of COM1.
const COM1: u16 = 0x3F8;

// Register offsets from the base port.
/// Transmit holding register (write), receive buffer (read); divisor low byte while DLAB=1.
const DATA: u8 = 0;
/// Interrupt enable register; divisor high byte while DLAB=1.
const IER: u8 = 1;
/// FIFO control register (write only).
const FCR: u8 = 2;
/// Line control register: word format and DLAB (bit 7, divisor latch access).
const LCR: u8 = 3;
/// Modem control register: DTR (bit 0), RTS (bit 1).
const MCR: u8 = 4;
/// Line status register.
const LSR: u8 = 5;

/// LSR bit 0: a received byte is waiting in the receive buffer.
const LSR_DATA_READY: u8 = 1 << 0;
/// LSR bit 5: the transmit holding register is empty and takes the next byte.
const LSR_THR_EMPTY: u8 = 1 << 5;

/// 115200 baud: the UART's 1.8432 MHz clock / 16 / 1.
const BAUD_DIVISOR: u8 = 1;

/// The UART's set-up, in the order it needs: (port, value) pairs, the port's low byte first
/// (every register is at 0x3F8-0x3FF). The PVH entry stub (`asm/pvh.s`) runs it too. A table and a loop: seven plain port writes cost 13 bytes
/// more.
pub static INIT: [[u8; 2]; 7] = [
    [port(LCR), 0x80], // DLAB=1: DATA and IER now address the baud-rate divisor
    [port(DATA), BAUD_DIVISOR], // divisor, low byte
    [port(IER), 0x00], // divisor, high byte
    [port(LCR), 0x03], // DLAB=0; 8 data bits, no parity, 1 stop bit (8N1)
    [port(IER), 0x01], // an interrupt when bytes arrive: they wake the idle loop
    [port(FCR), 0x07], // enable the FIFOs and clear both
    [port(MCR), 0x0B], // DTR, RTS: "ready"; OUT2: the UART's IRQ line to the PIC (IRQ 4)
];

/// The low byte of a COM1 register's port.
const fn port(offset: u8) -> u8 {
    (COM1 + offset as u16) as u8
}

/// Programs COM1 for 115200 8N1 with FIFOs, in the order the UART needs. With no UART at COM1
/// the writes go nowhere; see [`received`].
#[cfg(target_arch = "x86")]
#[inline(always)]
pub fn init() {
    // SAFETY: COM1's registers; nothing else lives at these ports. SI is saved and restored
    // (it cannot be an operand on this target); the table is read through DS = 0.
    unsafe {
        asm!(
            "push si",
            "mov si, offset {table}",
            "mov dh, 0x03",     // every register is at 0x3F8-0x3FF: DH stays, DL varies
            "mov cx, 7",
            "3:",
            "lodsw",            // AL = the register's port (low byte), AH = the value
            "mov dl, al",
            "mov al, ah",
            "out dx, al",
            "loop 3b",
            "pop si",
            table = sym INIT,
            out("al") _,
            out("ah") _,
            out("cx") _,
            out("dx") _,
        )
    };
}

/// Programs COM1 as above, from the same table (in 64-bit code a plain loop is as small).
#[cfg(not(target_arch = "x86"))]
pub fn init() {
    for [register, value] in INIT {
        // SAFETY: COM1's registers, as above.
        unsafe { outb(COM1 & 0xFF00 | register as u16, value) };
    }
}

/// LSR bit 7: an error in the receive FIFO; set, with every other bit, with nothing at COM1's
/// ports (they read 0xFF).
const NO_UART_BIT: u8 = 1 << 7;

/// Sends one byte, waiting for the transmitter first. (With no UART the port reads 0xFF, which
/// says "empty": the loop never hangs.)
#[inline(always)]
pub fn write(byte: u8) {
    // SAFETY: reading LSR and writing THR have no effect beyond the UART.
    unsafe {
        while inb(COM1 + LSR as u16) & LSR_THR_EMPTY == 0 {}
        outb(COM1 + DATA as u16, byte);
    }
}

/// The byte that arrived on COM1 (someone typed on the serial console), if one did.
///
/// Many platforms' default VMs have no COM1 (oVirt, Proxmox, VirtualBox, VMware, Hyper-V). Then
/// the ports read 0xFF, and LSR would claim "a byte has arrived" forever: a line status of all
/// ones is no UART, and nothing arrived.
#[inline(always)]
pub fn received() -> Option<u8> {
    // SAFETY: reading LSR has no side effect; reading RBR takes the byte out of the UART.
    unsafe {
        // Bit 7 (an error in the receive FIFO) is clear while bytes arrive whole, and set (with
        // every other bit) where there is no UART: a byte is taken when bit 0 is set and bit 7
        // clear. (A damaged byte stays unread, and the console with it; QEMU never damages one.)
        let status = inb(COM1 + LSR as u16);
        (status & (NO_UART_BIT | LSR_DATA_READY) == LSR_DATA_READY).then(|| inb(COM1 + DATA as u16))
    }
}
