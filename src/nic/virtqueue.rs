//! A split virtqueue (Virtual I/O Device 1.2, 2.7): a descriptor table, the driver's ring of
//! descriptors it offers ("available") and the device's ring of descriptors it has finished
//! with ("used"), laid out in one 4 KiB ring area of [`dma`](super::dma). One buffer per
//! descriptor, never chained: each packet buffer is descriptor `i`, buffer `i`.

use core::cell::Cell;
use core::sync::atomic::{Ordering, fence};

/// The most descriptors per queue, and the net card's count (a power of two, at most what the
/// device offers: QEMU's and
/// Firecracker's virtio-net 256, QEMU's virtio-serial 128). Firecracker reads its tap only
/// while the receive buffers it holds add up to 65,562 bytes (the largest frame it could
/// have to deliver), so 2 KiB buffers take more than 32 descriptors: with 16 it never
/// delivered a frame.
pub const SIZE: u16 = 64;
/// Descriptor flag: the device writes this buffer (receive).
pub const WRITE: u16 = 2;

/// Offsets of the three parts in the ring area (each aligned as the specification asks:
/// descriptors 16, available ring 2, used ring 4).
/// The available ring right after the descriptors (16 bytes each), as a legacy virtio-mmio
/// device expects; the used ring at a power of two (its QueueAlign) past it.
const DESCRIPTORS: usize = 0;
const AVAILABLE: usize = 16 * SIZE as usize;
const USED: usize = 2048;
const _: () = assert!(AVAILABLE + 6 + 2 * SIZE as usize <= USED);
const _: () = assert!(USED + 6 + 8 * SIZE as usize <= super::dma::RING);

/// One descriptor (2.7.5).
#[repr(C)]
struct Descriptor {
    /// The buffer's physical address.
    address: u64,
    length: u32,
    /// [`WRITE`]; no chaining.
    flags: u16,
    next: u16,
}

/// One used-ring element (2.7.8).
#[repr(C)]
struct UsedElement {
    /// The descriptor the device finished with.
    id: u32,
    /// Bytes it wrote into it.
    length: u32,
}

/// One queue, set up in `ring` (4 KiB of shared memory).
pub struct Virtqueue {
    ring: *mut u8,
    /// The next free slot of the available ring (its `idx`).
    available: Cell<u16>,
    /// The first used element not looked at yet.
    last_used: Cell<u16>,
    /// Its descriptors: a power of two, at most [`SIZE`] (the rings' layout is [`SIZE`]'s).
    size: u16,
}

impl Virtqueue {
    /// Fills the descriptor table of a queue of `size` descriptors (a power of two, at most
    /// [`SIZE`]): descriptor `i` is `buffers(i)` of `length` bytes. Out of line: the net card
    /// and the console make a dozen queues.
    #[inline(never)]
    pub fn new(
        ring: *mut u8,
        buffers: fn(usize) -> *mut u8,
        length: u32,
        flags: u16,
        size: u16,
    ) -> Self {
        let size = size.clamp(1, SIZE);
        for index in 0..usize::from(size) {
            // SAFETY: the ring area, not yet given to the device.
            unsafe {
                ring.add(DESCRIPTORS).cast::<Descriptor>().add(index).write_volatile(Descriptor {
                    address: buffers(index) as u64,
                    length,
                    flags,
                    next: 0,
                })
            };
        }
        Virtqueue { ring, available: Cell::new(0), last_used: Cell::new(0), size }
    }

    /// Its descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The physical addresses of the descriptor table, the available ring and the used ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        let base = self.ring as u64;
        (base + DESCRIPTORS as u64, base + AVAILABLE as u64, base + USED as u64)
    }

    fn u16_at(&self, offset: usize) -> *mut u16 {
        self.ring.wrapping_add(offset).cast()
    }

    /// Sets how many bytes descriptor `index`'s buffer holds (transmit).
    pub fn set_length(&self, index: u16, length: u32) {
        // SAFETY: a descriptor the device does not own now.
        unsafe {
            let descriptor =
                self.ring.add(DESCRIPTORS).cast::<Descriptor>().add(usize::from(index % self.size));
            (&raw mut (*descriptor).length).write_volatile(length);
        }
    }

    /// Offers descriptor `index` to the device (the caller then notifies it).
    pub fn offer(&self, index: u16) {
        let slot = self.available.get();
        // Whatever the buffer holds is written before the device can see it offered.
        fence(Ordering::SeqCst);
        // SAFETY: the available ring: flags, idx, then `size` entries.
        unsafe {
            self.u16_at(AVAILABLE + 4 + 2 * usize::from(slot % self.size))
                .write_volatile(index % self.size);
            fence(Ordering::SeqCst);
            self.u16_at(AVAILABLE + 2).write_volatile(slot.wrapping_add(1));
        }
        self.available.set(slot.wrapping_add(1));
    }

    /// The next descriptor the device has finished with, and the bytes it wrote, without
    /// taking it.
    pub fn peek_used(&self) -> Option<(u16, u32)> {
        let next = self.last_used.get();
        // SAFETY: the used ring: flags, idx, then `size` elements; the device writes idx last.
        let index = unsafe { self.u16_at(USED + 2).read_volatile() };
        if index == next {
            return None;
        }
        fence(Ordering::SeqCst);
        // SAFETY: as above; an element the device has published.
        let element = unsafe {
            self.ring
                .add(USED + 4)
                .cast::<UsedElement>()
                .add(usize::from(next % self.size))
                .read_volatile()
        };
        Some(((element.id % u32::from(self.size)) as u16, element.length))
    }

    /// Takes the element [`peek_used`](Self::peek_used) returned.
    pub fn take_used(&self) {
        self.last_used.set(self.last_used.get().wrapping_add(1));
    }

    /// Descriptors offered and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.available.get().wrapping_sub(self.last_used.get())
    }
}
