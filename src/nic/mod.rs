//! The network card: the first one PCI lists that the VM drives (virtio-net, e1000, e1000e),
//! behind one small interface the network stack's device (`net::device`) uses. A second card
//! is left alone: the VM answers on the first only.

pub mod dma;
pub mod e1000;
pub mod virtio;
pub mod virtio_pci;
pub mod virtqueue;

use crate::pci::{self, Function};
use e1000::E1000;
use virtio::VirtioNet;
use virtio_pci::Pci;

/// The vector a card's MSI or MSI-X message raises (its handler only ends it).
pub const NIC_VECTOR: u8 = 0xE0;

/// Which card, as a person would name it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Model {
    VirtioNet,
    E1000,
    E1000e,
}

impl Model {
    fn of(vendor: u16, device: u16) -> Option<Model> {
        match (vendor, device) {
            (virtio_pci::VENDOR, virtio::NET_TRANSITIONAL | virtio::NET_MODERN) => {
                Some(Model::VirtioNet)
            }
            (e1000::VENDOR, e1000::E1000) => Some(Model::E1000),
            (e1000::VENDOR, e1000::E1000E) => Some(Model::E1000e),
            _ => None,
        }
    }

    /// The name QEMU and libvirt give it.
    pub fn name(self) -> &'static [u8] {
        match self {
            Model::VirtioNet => b"virtio-net",
            Model::E1000 => b"e1000",
            Model::E1000e => b"e1000e",
        }
    }
}

/// How the card signals: a message to the local APIC, or its INTx line on this ISA IRQ.
#[derive(Clone, Copy)]
pub enum Signal {
    Message,
    IsaIrq(u8),
    /// Neither: the VM polls it when something else wakes it.
    None,
}

/// A card, running.
pub enum Nic {
    Virtio(VirtioNet<Pci>),
    E1000(E1000),
}

/// The first card PCI lists that the VM drives, started; its model and how it signals. `map`
/// makes a register address reachable (the entry's [`Reach::map_device`]).
///
/// [`Reach::map_device`]: crate::core64::Reach::map_device
pub fn find(apic_id: u8, map: impl Fn(u64) -> bool) -> Option<(Nic, Model, Signal)> {
    let function = pci::find(|vendor, device| Model::of(vendor, device).is_some())?;
    let (vendor, device) = function.ids();
    let model = Model::of(vendor, device)?;
    match model {
        Model::VirtioNet => {
            let transport = Pci::at(function, &map)?;
            if !transport.enable_msix(apic_id, NIC_VECTOR, &map) {
                return None;
            }
            let card = VirtioNet::start(transport)?;
            Some((Nic::Virtio(card), model, Signal::Message))
        }
        Model::E1000 | Model::E1000e => {
            let registers = function.memory_bar(0).filter(|&bar| map(bar))?;
            let signal = intel_signal(function, apic_id);
            Some((Nic::E1000(E1000::start(registers)), model, signal))
        }
    }
}

/// An Intel card signals by MSI where it has the capability (the 82574L), else by INTx on the
/// line the firmware routed (the 82540EM).
fn intel_signal(function: Function, apic_id: u8) -> Signal {
    if function.enable_msi(apic_id, NIC_VECTOR) {
        function.enable(false);
        return Signal::Message;
    }
    function.enable(true);
    match function.interrupt_line() {
        Some(line) => Signal::IsaIrq(line),
        None => Signal::None,
    }
}

impl Nic {
    pub fn mac(&self) -> [u8; 6] {
        match self {
            Nic::Virtio(card) => card.mac(),
            Nic::E1000(card) => card.mac(),
        }
    }

    /// Quiets the card's interrupt (reads its cause), so that a level-triggered line drops.
    pub fn acknowledge(&self) {
        if let Nic::E1000(card) = self {
            card.acknowledge();
        }
    }

    /// The next received frame, in place, if there is one; [`recycle`](Self::recycle) gives
    /// it back.
    pub fn received(&self) -> Option<&mut [u8]> {
        let (buffer, length) = match self {
            Nic::Virtio(card) => card.received()?,
            Nic::E1000(card) => card.received()?,
        };
        // SAFETY: a buffer the card has written and handed over, until `recycle`.
        Some(unsafe { dma::bytes(buffer, length) })
    }

    pub fn recycle(&self) {
        match self {
            Nic::Virtio(card) => card.recycle(),
            Nic::E1000(card) => card.recycle(),
        }
    }

    /// Whether the card has sent every frame it was given.
    pub fn sent_all(&self) -> bool {
        match self {
            Nic::Virtio(card) => card.sent_all(),
            Nic::E1000(card) => card.sent_all(),
        }
    }

    /// Whether a transmit buffer is free.
    pub fn can_send(&self) -> bool {
        self.transmit_buffer().is_some()
    }

    fn transmit_buffer(&self) -> Option<*mut u8> {
        match self {
            Nic::Virtio(card) => card.transmit_buffer(),
            Nic::E1000(card) => card.transmit_buffer(),
        }
    }

    /// Sends a frame of `length` bytes that `fill` writes; returns what `fill` returns. The
    /// caller has checked [`can_send`](Self::can_send); if the buffer went meanwhile, `fill`
    /// writes into a scratch buffer and nothing is sent.
    pub fn send<R>(&self, length: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let length = length.min(dma::BUFFER - virtio::HEADER);
        match self.transmit_buffer() {
            Some(buffer) => {
                // SAFETY: a free transmit buffer, the card told only below.
                let result = fill(unsafe { dma::bytes(buffer, length) });
                match self {
                    Nic::Virtio(card) => card.send(length),
                    Nic::E1000(card) => card.send(length),
                }
                result
            }
            None => fill(&mut [0; 1514][..length.min(1514)]),
        }
    }
}
