//! COM1, the 16550 UART at I/O port 0x3F8: the line test harnesses read.
//!
//! QEMU prints whatever is written to the data port, programmed or not; a real 16550 (and other
//! emulators) powers up with no baud rate, so program it before the first byte and wait for the
//! transmitter before each one.

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

/// Programs COM1 for 115200 8N1 with FIFOs, in the order the UART needs. (Seven plain port
/// writes: a table and a loop cost more bytes.)
#[inline(always)]
pub fn init() {
    let register = |offset: u8, value: u8| {
        // SAFETY: COM1's registers; nothing else lives at these ports.
        unsafe { outb(COM1 + offset as u16, value) }
    };
    register(LCR, 0x80); // DLAB=1: DATA and IER now address the baud-rate divisor
    register(DATA, BAUD_DIVISOR); // divisor, low byte
    register(IER, 0x00); // divisor, high byte
    register(LCR, 0x03); // DLAB=0; 8 data bits, no parity, 1 stop bit (8N1)
    register(IER, 0x00); // no UART interrupts: the VM polls
    register(FCR, 0x07); // enable the FIFOs and clear both
    register(MCR, 0x03); // DTR and RTS: "ready" to whatever is on the other end
}

#[inline(always)]
/// Sends one byte, waiting for the transmitter first. (With no UART the port reads 0xFF, which
/// says "empty": the loop never hangs.)
pub fn write(byte: u8) {
    // SAFETY: reading LSR and writing THR have no effect beyond the UART.
    unsafe {
        while inb(COM1 + LSR as u16) & LSR_THR_EMPTY == 0 {}
        outb(COM1 + DATA as u16, byte);
    }
}

#[inline(always)]
/// Whether a byte has arrived on COM1 (someone typed on the serial console).
pub fn received() -> bool {
    // SAFETY: reading LSR has no side effect.
    unsafe { inb(COM1 + LSR as u16) & LSR_DATA_READY != 0 }
}
