//! A small JSON reader of our own, for the agent's commands: it checks that a message is one
//! well-formed JSON value (RFC 8259: objects, arrays, strings, numbers, `true`, `false`, `null`)
//! and picks out the few members the agent reads (`execute`, and `id`, `mode`, `time` in
//! `arguments`), as slices of the message. Nothing is copied or decoded: a string is returned
//! as it was written, escapes and all, which is also how a reply echoes it. Pure, and tested on
//! the host.
//!
//! Why not `serde-json-core`: it needs `serde` and a derived deserialiser per message type, and
//! its code (number parsing, escapes, error formatting) is several KiB, where the agent's whole
//! budget is about 6 KiB; the agent needs neither floats nor decoded strings, only to know that a
//! message is valid and where four members are.

/// The most nested objects and arrays read (the stream's framing cuts a message deeper than this
/// before it gets here, so the recursion below is bounded).
pub const MAX_DEPTH: u32 = 32;

/// What a value is, as far as the agent cares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    String,
    Number,
    Object,
    /// An array, `true`, `false` or `null`.
    Other,
}

/// The members the agent reads from a command.
#[derive(Default, Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `execute`, the command's name (if it is a string).
    pub execute: Option<&'a [u8]>,
    /// `arguments.id` (guest-sync), as written.
    pub id: Option<&'a [u8]>,
    /// `arguments.mode` (guest-shutdown).
    pub mode: Option<&'a [u8]>,
    /// `arguments.time` (guest-set-time), as written.
    pub time: Option<&'a [u8]>,
}

/// A message, read.
#[derive(Clone, Copy, Debug)]
pub enum Parsed<'a> {
    /// An object: the members found in it.
    Object(Request<'a>),
    /// Valid JSON, but not an object.
    NotObject,
    /// Not JSON.
    Invalid,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> u8 {
        self.bytes.get(self.at).copied().unwrap_or(0)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\r' | b'\n') {
            self.at += 1;
        }
    }

    /// Takes `byte` (after any white space) if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let next = self.peek() == byte;
        self.at += usize::from(next);
        next
    }

    /// A string's contents, between its quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' => self.at += 1,
                0..=0x1F => return None,
                _ => {}
            }
            self.at += 1;
        }
        let contents = &self.bytes[start..self.at];
        self.at += 1;
        Some(contents)
    }

    /// One value: its kind and its text (a string's without the quotes).
    fn value(&mut self, depth: u32) -> Option<(Kind, &'a [u8])> {
        self.skip_space();
        let start = self.at;
        let kind = match self.peek() {
            b'"' => return Some((Kind::String, self.string()?)),
            open @ (b'{' | b'[') => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                let close = open + 2;
                if !self.eat(close) {
                    loop {
                        if open == b'{' && (self.string().is_none() || !self.eat(b':')) {
                            return None;
                        }
                        self.value(depth + 1)?;
                        if self.eat(close) {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                if open == b'{' { Kind::Object } else { Kind::Other }
            }
            b'-' | b'0'..=b'9' => {
                self.at += 1;
                while matches!(self.peek(), b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    self.at += 1;
                }
                Kind::Number
            }
            b'a'..=b'z' => {
                while self.peek().is_ascii_lowercase() {
                    self.at += 1;
                }
                if !matches!(&self.bytes[start..self.at], b"true" | b"false" | b"null") {
                    return None;
                }
                Kind::Other
            }
            _ => return None,
        };
        Some((kind, &self.bytes[start..self.at]))
    }
}

/// Calls `visit` with each member (name, kind, value) of `object`, an object already checked.
fn members<'a>(object: &'a [u8], visit: &mut dyn FnMut(&'a [u8], Kind, &'a [u8])) {
    let mut reader = Reader { bytes: object, at: 1 };
    while let Some(name) = reader.string() {
        reader.eat(b':');
        let Some((kind, value)) = reader.value(1) else { return };
        visit(name, kind, value);
        if !reader.eat(b',') {
            return;
        }
    }
}

/// Reads one message: a JSON value and nothing else but white space.
pub fn parse(message: &[u8]) -> Parsed<'_> {
    let mut reader = Reader { bytes: message, at: 0 };
    let value = reader.value(0);
    reader.skip_space();
    let (kind, object) = match value {
        Some(value) if reader.at == message.len() => value,
        _ => return Parsed::Invalid,
    };
    if kind != Kind::Object {
        return Parsed::NotObject;
    }
    let mut request = Request::default();
    let mut arguments = None;
    members(object, &mut |name, kind, value| match (name, kind) {
        (b"execute", Kind::String) => request.execute = Some(value),
        (b"arguments", Kind::Object) => arguments = Some(value),
        _ => {}
    });
    if let Some(arguments) = arguments {
        members(arguments, &mut |name, kind, value| match (name, kind) {
            (b"id", Kind::Number) => request.id = Some(value),
            (b"mode", Kind::String) => request.mode = Some(value),
            (b"time", Kind::Number) => request.time = Some(value),
            _ => {}
        });
    }
    Parsed::Object(request)
}
