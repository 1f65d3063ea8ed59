//! Text the VM writes about its network (the address line, the HTTP body, the DHCP host name),
//! without `core::fmt`: a fixed buffer that takes bytes, decimal and hexadecimal numbers, and
//! addresses as people write them. Pure, and tested on the host.

/// Bytes written into a fixed array; what does not fit is dropped.
pub struct Text<const N: usize> {
    bytes: [u8; N],
    length: usize,
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text::new()
    }
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Text { bytes: [0; N], length: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }

    pub fn push(&mut self, byte: u8) -> &mut Self {
        if let Some(slot) = self.bytes.get_mut(self.length) {
            *slot = byte;
            self.length += 1;
        }
        self
    }

    pub fn text(&mut self, text: &[u8]) -> &mut Self {
        for &byte in text {
            self.push(byte);
        }
        self
    }

    /// `value` in decimal.
    pub fn decimal(&mut self, value: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut count = 0;
        let mut rest = value;
        loop {
            digits[count] = b'0' + (rest % 10) as u8;
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for &digit in digits[..count].iter().rev() {
            self.push(digit);
        }
        self
    }

    /// `value` in lower-case hexadecimal, at least `width` digits.
    pub fn hex(&mut self, value: u64, width: usize) -> &mut Self {
        let digits = (64 - value.leading_zeros() as usize).div_ceil(4).max(width).max(1);
        for shift in (0..digits).rev() {
            self.push(b"0123456789abcdef"[(value >> (4 * shift) & 0xF) as usize]);
        }
        self
    }

    /// A MAC address: six two-digit hexadecimal bytes joined by `separator` (or none).
    pub fn mac(&mut self, mac: [u8; 6], separator: Option<u8>) -> &mut Self {
        for (i, &byte) in mac.iter().enumerate() {
            if let (true, Some(separator)) = (i > 0, separator) {
                self.push(separator);
            }
            self.hex(byte.into(), 2);
        }
        self
    }

    /// An IPv4 address, dotted decimal.
    pub fn ipv4(&mut self, address: [u8; 4]) -> &mut Self {
        for (i, &byte) in address.iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            self.decimal(byte.into());
        }
        self
    }

    /// An IPv6 address in its canonical text form (RFC 5952): lower case, no leading zeros,
    /// the longest run of two or more zero groups (the first of equals) written `::`.
    pub fn ipv6(&mut self, address: [u8; 16]) -> &mut Self {
        let groups: [u16; 8] =
            core::array::from_fn(|i| u16::from_be_bytes([address[2 * i], address[2 * i + 1]]));
        let (mut best, mut best_length) = (8, 0);
        let mut i = 0;
        while i < 8 {
            let start = i;
            while i < 8 && groups[i] == 0 {
                i += 1;
            }
            if i - start > best_length && i - start >= 2 {
                (best, best_length) = (start, i - start);
            }
            i += 1;
        }
        let mut i = 0;
        while i < 8 {
            if i == best {
                self.text(b"::");
                i += best_length;
                continue;
            }
            if i > 0 && i != best + best_length {
                self.push(b':');
            }
            self.hex(groups[i].into(), 1);
            i += 1;
        }
        self
    }
}

/// The link-local IPv6 address of a MAC (RFC 4291, appendix A: fe80::/64 and the modified
/// EUI-64 interface identifier).
pub fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut address = [0u8; 16];
    address[0] = 0xFE;
    address[1] = 0x80;
    address[8] = mac[0] ^ 0x02;
    address[9] = mac[1];
    address[10] = mac[2];
    address[11] = 0xFF;
    address[12] = 0xFE;
    address[13] = mac[3];
    address[14] = mac[4];
    address[15] = mac[5];
    address
}

/// The host name the VM gives DHCP: `vm512-` and the MAC's twelve hexadecimal digits (a
/// name unique on its network, valid under RFC 1123).
pub fn host_name(mac: [u8; 6]) -> Text<18> {
    let mut name = Text::default();
    name.text(b"vm512-").mac(mac, None);
    name
}
