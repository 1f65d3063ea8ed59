//! The memory the network card reads and writes on its own: descriptor rings and packet
//! buffers, in the image's zeroed data. Every entry maps memory one to one (UEFI's map, the PVH
//! stub's), so an address here is the physical address the card is given.

use core::cell::UnsafeCell;

/// One packet buffer: a whole Ethernet frame (1,514 bytes) plus the virtio header.
pub const BUFFER: usize = 2048;
/// Receive and transmit buffers: one per descriptor of a virtqueue (`virtqueue::SIZE`), so
/// that no two descriptors share one.
pub const RX_COUNT: usize = super::virtqueue::SIZE as usize;
pub const TX_COUNT: usize = super::virtqueue::SIZE as usize;
/// Room for one ring's descriptors (and, for virtio, its driver and device areas).
pub const RING: usize = 4096;

#[repr(C, align(4096))]
struct Area {
    rx_ring: [u8; RING],
    tx_ring: [u8; RING],
    rx: [[u8; BUFFER]; RX_COUNT],
    tx: [[u8; BUFFER]; TX_COUNT],
}

/// Shared with the card: the CPU and the device both write it, so it is reached only through
/// raw pointers and volatile accesses.
struct Shared(UnsafeCell<Area>);
// SAFETY: one CPU runs the VM, and interrupt handlers never touch this memory.
unsafe impl Sync for Shared {}

static AREA: Shared = Shared(UnsafeCell::new(Area {
    rx_ring: [0; RING],
    tx_ring: [0; RING],
    rx: [[0; BUFFER]; RX_COUNT],
    tx: [[0; BUFFER]; TX_COUNT],
}));

fn area() -> *mut Area {
    AREA.0.get()
}

/// The receive ring's memory.
pub fn rx_ring() -> *mut u8 {
    // SAFETY: a field of the static area, no reference made.
    unsafe { (&raw mut (*area()).rx_ring).cast() }
}

/// The transmit ring's memory.
pub fn tx_ring() -> *mut u8 {
    // SAFETY: as above.
    unsafe { (&raw mut (*area()).tx_ring).cast() }
}

/// Receive buffer `index` (taken modulo the count).
pub fn rx_buffer(index: usize) -> *mut u8 {
    // SAFETY: as above; the index is kept in range.
    unsafe { (&raw mut (*area()).rx[index % RX_COUNT]).cast() }
}

/// Transmit buffer `index` (taken modulo the count).
pub fn tx_buffer(index: usize) -> *mut u8 {
    // SAFETY: as above.
    unsafe { (&raw mut (*area()).tx[index % TX_COUNT]).cast() }
}

/// The physical address the card is given for a pointer into the area.
pub fn physical(pointer: *mut u8) -> u64 {
    pointer as u64
}

/// `length` bytes of a buffer, for the CPU to read (once the card has written them) or write
/// (before the card is told).
///
/// # Safety
/// The card must not be writing the buffer meanwhile, and `length` at most [`BUFFER`].
pub unsafe fn bytes<'a>(buffer: *mut u8, length: usize) -> &'a mut [u8] {
    // SAFETY: the caller's promise; the buffer is BUFFER bytes of the static area.
    unsafe { core::slice::from_raw_parts_mut(buffer, length.min(BUFFER)) }
}
