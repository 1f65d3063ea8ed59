//! Intel's gigabit cards as VMMs give them: the 82540EM ("e1000": QEMU pc's default NIC,
//! VirtualBox's and VMware's) and the 82574L ("e1000e": QEMU q35's default, VMware's). Both
//! take the 8254x family's legacy descriptors and registers (Intel's 8254x Software
//! Developer's Manual, chapters 3 and 13), which is all the VM uses: one receive ring, one
//! transmit ring, the MAC address the card loaded from its EEPROM, and one interrupt cause
//! (a frame received; the link changing).
//!
//! Our own driver, not a crate's: the VM needs some 150 lines of it, and no maintained no_std
//! crate drives these cards without an allocator.

use core::cell::Cell;
use core::sync::atomic::{Ordering, fence};

use super::dma;

/// PCI IDs: Intel, 82540EM and 82574L.
pub const VENDOR: u16 = 0x8086;
pub const E1000: u16 = 0x100E;
pub const E1000E: u16 = 0x10D3;

/// Registers (byte offsets in BAR 0).
const CTRL: usize = 0x0000;
const STATUS: usize = 0x0008;
const ICR: usize = 0x00C0;
const IMS: usize = 0x00D0;
const IMC: usize = 0x00D8;
const RCTL: usize = 0x0100;
const TCTL: usize = 0x0400;
const TIPG: usize = 0x0410;
const RDBAL: usize = 0x2800;
const RDBAH: usize = 0x2804;
const RDLEN: usize = 0x2808;
const RDH: usize = 0x2810;
const RDT: usize = 0x2818;
const TDBAL: usize = 0x3800;
const TDBAH: usize = 0x3804;
const TDLEN: usize = 0x3808;
const TDH: usize = 0x3810;
const TDT: usize = 0x3818;
const MTA: usize = 0x5200;
const RAL0: usize = 0x5400;
const RAH0: usize = 0x5404;

/// CTRL: set link up, auto speed detection; device reset.
const CTRL_SLU: u32 = 1 << 6;
const CTRL_ASDE: u32 = 1 << 5;
const CTRL_RST: u32 = 1 << 26;
/// STATUS bit 1: link up.
const STATUS_LU: u32 = 1 << 1;
/// Interrupt causes: link status change, receive timer (a frame), receive overrun, and the
/// receive ring running low.
const INT_LSC: u32 = 1 << 2;
const INT_RXDMT0: u32 = 1 << 4;
const INT_RXO: u32 = 1 << 6;
const INT_RXT0: u32 = 1 << 7;
/// RCTL: enable, multicast promiscuous (IPv6 neighbour discovery uses multicast), accept
/// broadcast, strip the CRC; 2,048-byte buffers (size bits 0).
const RCTL_EN: u32 = 1 << 1;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
/// TCTL: enable, pad short packets, collision threshold 15, collision distance 64 (the
/// manual's recommended values).
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const TCTL_CT: u32 = 0x0F << 4;
const TCTL_COLD: u32 = 0x40 << 12;
/// The manual's inter-packet gap for copper.
const TIPG_COPPER: u32 = 0x0060_200A;
/// RAH bit 31: the address is valid.
const RAH_AV: u32 = 1 << 31;
/// 128 multicast table entries.
const MTA_ENTRIES: usize = 128;
/// The most polls of CTRL.RST after a reset.
const MAX_RESET_POLLS: u32 = 100_000;

/// Descriptor status bit 0: done (the card has written it back).
const DD: u8 = 1 << 0;
/// Receive status bit 1: end of packet (the VM takes single-buffer frames only).
const EOP: u8 = 1 << 1;
/// Transmit command: end of packet, insert the CRC, report status.
const CMD_EOP: u8 = 1 << 0;
const CMD_IFCS: u8 = 1 << 1;
const CMD_RS: u8 = 1 << 3;
/// Frames above this are not sent (an Ethernet frame without its CRC).
const MAX_FRAME: usize = 1514;

/// One receive descriptor (8254x manual, 3.2.3).
#[repr(C)]
struct RxDescriptor {
    /// The buffer's physical address.
    address: u64,
    /// Bytes the card wrote.
    length: u16,
    checksum: u16,
    /// [`DD`], [`EOP`].
    status: u8,
    errors: u8,
    special: u16,
}

/// One legacy transmit descriptor (8254x manual, 3.3.3).
#[repr(C)]
struct TxDescriptor {
    /// The buffer's physical address.
    address: u64,
    /// Bytes to send.
    length: u16,
    checksum_offset: u8,
    /// [`CMD_EOP`], [`CMD_IFCS`], [`CMD_RS`].
    command: u8,
    /// [`DD`].
    status: u8,
    checksum_start: u8,
    special: u16,
}

const RX_COUNT: usize = dma::RX_COUNT;
const TX_COUNT: usize = dma::TX_COUNT;

/// A card, set up and running.
pub struct E1000 {
    registers: usize,
    /// The receive descriptor to look at next.
    rx_next: Cell<usize>,
    /// The transmit descriptor to fill next.
    tx_next: Cell<usize>,
}

impl E1000 {
    fn read(&self, register: usize) -> u32 {
        // SAFETY: the card's registers in BAR 0 (mapped by the entry), 32-bit aligned.
        unsafe {
            core::ptr::with_exposed_provenance::<u32>(self.registers + register).read_volatile()
        }
    }

    fn write(&self, register: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::with_exposed_provenance_mut::<u32>(self.registers + register)
                .write_volatile(value)
        }
    }

    fn rx(&self, index: usize) -> *mut RxDescriptor {
        dma::rx_ring().cast::<RxDescriptor>().wrapping_add(index % RX_COUNT)
    }

    fn tx(&self, index: usize) -> *mut TxDescriptor {
        dma::tx_ring().cast::<TxDescriptor>().wrapping_add(index % TX_COUNT)
    }

    /// Resets the card at `registers` (BAR 0) and starts it: rings, buffers, the link, and the
    /// receive interrupt enabled.
    pub fn start(registers: u64) -> E1000 {
        let card =
            E1000 { registers: registers as usize, rx_next: Cell::new(0), tx_next: Cell::new(0) };
        card.write(IMC, u32::MAX);
        card.write(CTRL, card.read(CTRL) | CTRL_RST);
        let mut polls = 0;
        while card.read(CTRL) & CTRL_RST != 0 && polls < MAX_RESET_POLLS {
            polls += 1;
        }
        card.write(IMC, u32::MAX);
        card.read(ICR);
        card.write(CTRL, card.read(CTRL) | CTRL_SLU | CTRL_ASDE);
        for entry in 0..MTA_ENTRIES {
            card.write(MTA + 4 * entry, 0);
        }
        for index in 0..RX_COUNT {
            // SAFETY: the ring's memory, the card stopped.
            unsafe {
                card.rx(index).write_volatile(RxDescriptor {
                    address: dma::physical(dma::rx_buffer(index)),
                    length: 0,
                    checksum: 0,
                    status: 0,
                    errors: 0,
                    special: 0,
                })
            };
        }
        for index in 0..TX_COUNT {
            // SAFETY: as above; done (DD) means free.
            unsafe {
                card.tx(index).write_volatile(TxDescriptor {
                    address: dma::physical(dma::tx_buffer(index)),
                    length: 0,
                    checksum_offset: 0,
                    command: 0,
                    status: DD,
                    checksum_start: 0,
                    special: 0,
                })
            };
        }
        let rx_ring = dma::physical(dma::rx_ring());
        card.write(RDBAL, rx_ring as u32);
        card.write(RDBAH, (rx_ring >> 32) as u32);
        card.write(RDLEN, (RX_COUNT * size_of::<RxDescriptor>()) as u32);
        card.write(RDH, 0);
        card.write(RDT, (RX_COUNT - 1) as u32);
        card.write(RCTL, RCTL_EN | RCTL_MPE | RCTL_BAM | RCTL_SECRC);
        let tx_ring = dma::physical(dma::tx_ring());
        card.write(TDBAL, tx_ring as u32);
        card.write(TDBAH, (tx_ring >> 32) as u32);
        card.write(TDLEN, (TX_COUNT * size_of::<TxDescriptor>()) as u32);
        card.write(TDH, 0);
        card.write(TDT, 0);
        card.write(TIPG, TIPG_COPPER);
        card.write(TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);
        card.write(IMS, INT_RXT0 | INT_RXO | INT_RXDMT0 | INT_LSC);
        card
    }

    /// The address the card loaded from its EEPROM into receive address 0.
    pub fn mac(&self) -> [u8; 6] {
        let low = self.read(RAL0).to_le_bytes();
        let high = self.read(RAH0);
        if high & RAH_AV == 0 {
            // No address loaded: a locally administered one rather than none.
            return [0x02, 0, 0, 0, 0, 1];
        }
        let high = high.to_le_bytes();
        [low[0], low[1], low[2], low[3], high[0], high[1]]
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.read(STATUS) & STATUS_LU != 0
    }

    /// Reads (and so clears) the interrupt causes: the line goes quiet until the next one.
    pub fn acknowledge(&self) {
        self.read(ICR);
    }

    /// The next received frame's buffer and length, if the card has written one.
    pub fn received(&self) -> Option<(*mut u8, usize)> {
        loop {
            let index = self.rx_next.get();
            // SAFETY: the ring's memory; the card writes status last.
            let descriptor = unsafe { self.rx(index).read_volatile() };
            if descriptor.status & DD == 0 {
                return None;
            }
            let length = usize::from(descriptor.length);
            if descriptor.status & EOP != 0 && descriptor.errors == 0 && length <= dma::BUFFER {
                return Some((dma::rx_buffer(index), length));
            }
            // Part of a frame too long for one buffer, or a bad one: dropped.
            self.recycle();
        }
    }

    /// Hands the buffer of the frame [`received`](Self::received) returned back to the card.
    pub fn recycle(&self) {
        let index = self.rx_next.get();
        // The frame is read before the card may write the buffer again.
        fence(Ordering::SeqCst);
        // SAFETY: the descriptor the card finished with; its buffer goes back as it was.
        unsafe {
            let descriptor = self.rx(index);
            (&raw mut (*descriptor).status).write_volatile(0);
        }
        self.write(RDT, (index % RX_COUNT) as u32);
        self.rx_next.set((index + 1) % RX_COUNT);
    }

    /// A free transmit buffer, if the card has finished with the next one.
    pub fn transmit_buffer(&self) -> Option<*mut u8> {
        let index = self.tx_next.get();
        // SAFETY: the ring's memory; the card sets DD when it is done with a descriptor.
        let status = unsafe { (&raw const (*self.tx(index)).status).read_volatile() };
        (status & DD != 0).then(|| dma::tx_buffer(index))
    }

    /// Whether the card has sent every frame it was given (each descriptor done).
    pub fn sent_all(&self) -> bool {
        // SAFETY: the ring's memory; the card sets DD when it is done with a descriptor.
        (0..TX_COUNT)
            .all(|index| unsafe { (&raw const (*self.tx(index)).status).read_volatile() } & DD != 0)
    }

    /// Sends the first `length` bytes of the buffer [`transmit_buffer`](Self::transmit_buffer)
    /// returned.
    pub fn send(&self, length: usize) {
        if length > MAX_FRAME {
            return;
        }
        let index = self.tx_next.get();
        // The frame is in the buffer before the card is told.
        fence(Ordering::SeqCst);
        // SAFETY: a descriptor the card is done with; the buffer is filled.
        unsafe {
            let descriptor = self.tx(index);
            (&raw mut (*descriptor).length).write_volatile(length as u16);
            (&raw mut (*descriptor).command).write_volatile(CMD_EOP | CMD_IFCS | CMD_RS);
            (&raw mut (*descriptor).status).write_volatile(0);
        }
        let next = (index + 1) % TX_COUNT;
        self.tx_next.set(next);
        self.write(TDT, next as u32);
    }
}
