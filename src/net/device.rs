//! The card as smoltcp sees it (`phy::Device`): a received frame is lent in place and given
//! back to the card once the stack has read it; a frame to send is written straight into a
//! transmit buffer. No copies, no allocation. Before a frame from a sender the stack may not
//! have resolved, the stack gets the lesson `glean` makes of it.

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::glean::{self, Gleaner};
use crate::nic::Nic;

/// The largest Ethernet frame, without its CRC.
const MTU: usize = 1514;

pub struct Port<'a> {
    pub nic: &'a Nic,
    pub gleaner: &'a mut Gleaner,
}

/// A received frame: the card's next one, or a lesson made here.
pub enum Rx<'a> {
    Card(&'a Nic),
    Lesson([u8; glean::FRAME], usize),
}

pub struct Tx<'a> {
    nic: &'a Nic,
}

impl phy::Device for Port<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let frame = self.nic.received()?;
        let rx = match self.gleaner.lesson(frame, now.total_micros() as u64) {
            // The frame stays where it is, for the next call.
            Some((lesson, length)) => Rx::Lesson(lesson, length),
            None => Rx::Card(self.nic),
        };
        Some((rx, Tx { nic: self.nic }))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        self.nic.can_send().then_some(Tx { nic: self.nic })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = MTU;
        capabilities.max_burst_size = Some(1);
        capabilities
    }
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            Rx::Lesson(frame, length) => f(&frame[..length]),
            Rx::Card(nic) => {
                let result = match nic.received() {
                    Some(frame) => f(frame),
                    None => f(&[]),
                };
                nic.recycle();
                result
            }
        }
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, length: usize, f: F) -> R {
        self.nic.send(length, f)
    }
}
