//! The net family's own pure code on the host: the web page's request reader and answer
//! (`src/net/http.rs`) and the text it writes (`src/net/text.rs`), with chosen requests and
//! with generated ones (none may panic or be answered wrongly).

#[path = "../../../src/net/http.rs"]
mod http;
#[path = "../../../src/net/text.rs"]
pub(super) mod text;

use super::harness::Noise;
use http::Answer;
use text::Text;

#[test]
fn get_slash_is_the_page_and_everything_else_an_error_status() {
    let cases: [(&[u8], bool, Answer); 13] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, Answer::Page),
        (b"GET /?probe=1 HTTP/1.0\r\n\r\n", false, Answer::Page),
        (b"HEAD / HTTP/1.1\r\n\r\n", false, Answer::Head),
        (b"GET / HTTP/1.1\n\n", false, Answer::Page),
        (b"GET /index.html HTTP/1.1\r\n\r\n", false, Answer::NotFound),
        (b"POST / HTTP/1.1\r\n\r\n", false, Answer::MethodNotAllowed),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", false, Answer::Incomplete),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", true, Answer::Page),
        (b"", false, Answer::Incomplete),
        (b"", true, Answer::BadRequest),
        (b"GET /\r\n\r\n", false, Answer::BadRequest),
        (b"GET  / HTTP/1.1\r\n\r\n", false, Answer::BadRequest),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", true, Answer::BadRequest),
    ];
    for (request, full, expected) in cases {
        assert_eq!(http::answer(request, full), expected, "{:?}", String::from_utf8_lossy(request));
    }
}

#[test]
fn the_head_names_the_status_and_the_body_length() {
    let mut head = Text::<160>::new();
    http::head(Answer::Page, 57, &mut head);
    assert_eq!(
        head.as_bytes(),
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 57\r\nConnection: close\r\n\r\n"
    );
    let mut head = Text::<160>::new();
    http::head(Answer::NotFound, 57, &mut head);
    assert!(head.as_bytes().starts_with(b"HTTP/1.0 404 Not Found\r\n"));
    assert!(head.as_bytes().windows(19).any(|w| w == b"Content-Length: 0\r\n"));
}

/// 20,000 generated requests: mutations of real ones, random bytes, every truncation. The
/// reader never panics, and answers the page only to a well-formed `GET /`.
#[test]
fn generated_requests_never_crash_the_reader() {
    let seeds: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: 192.0.2.57\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        b"HEAD / HTTP/1.0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
    ];
    let mut noise = Noise(0x5EED_F00D);
    for round in 0..20_000 {
        let seed = seeds[round % seeds.len()];
        let mut request: Vec<u8> = match noise.below(3) {
            0 => noise.bytes(1100),
            1 => seed[..noise.below(seed.len() + 1)].to_vec(),
            _ => noise.mutated(seed),
        };
        request.truncate(1024);
        let full = noise.below(2) == 0;
        let answer = http::answer(&request, full);
        if answer == Answer::Page {
            assert!(request.starts_with(b"GET /"), "round {round}: {request:?}");
        }
        let mut head = Text::<160>::new();
        http::head(answer, noise.below(10_000), &mut head);
        assert!(head.as_bytes().starts_with(b"HTTP/1.0 "), "round {round}");
    }
}

#[test]
fn addresses_are_written_as_people_write_them() {
    let mut line = Text::<120>::new();
    line.ipv4([192, 0, 2, 57]).push(b' ').mac([0x52, 0x54, 0, 0x12, 0x34, 0x56], Some(b':'));
    assert_eq!(line.as_bytes(), b"192.0.2.57 52:54:00:12:34:56");
    let ipv6 = |address: [u8; 16]| {
        let mut text = Text::<48>::new();
        text.ipv6(address);
        String::from_utf8(text.as_bytes().to_vec()).unwrap()
    };
    // Against the standard library's RFC 5952 writer, on chosen and generated addresses.
    let mut noise = Noise(42);
    let mut addresses = vec![
        text::link_local([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        [0; 16],
        [0xFF; 16],
        [0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [0x20, 0x01, 0x0D, 0xB8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    ];
    for _ in 0..2000 {
        // Sparse groups, so that runs of zeros are common.
        addresses.push(std::array::from_fn(|_| {
            if noise.below(3) == 0 { noise.next() as u8 } else { 0 }
        }));
    }
    for address in addresses {
        let ours = ipv6(address);
        let std = std::net::Ipv6Addr::from(address);
        // The standard library writes IPv4-mapped addresses its own way (::ffff:a.b.c.d).
        if std.to_ipv4_mapped().is_some() {
            continue;
        }
        assert_eq!(ours, std.to_string(), "{address:?}");
    }
    assert_eq!(
        ipv6(text::link_local([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
        "fe80::5054:ff:fe12:3456"
    );
}

#[test]
fn the_host_name_is_derived_from_the_mac() {
    let name = text::host_name([0x52, 0x54, 0, 0xAB, 0xCD, 0xEF]);
    assert_eq!(name.as_bytes(), b"vm512-525400abcdef");
    // What does not fit is dropped, never written past the end.
    let mut number = Text::<8>::new();
    number.decimal(0).push(b' ').decimal(4_294_967).hex(0xAB, 4);
    assert_eq!(number.as_bytes(), b"0 429496");
    let mut hex = Text::<8>::new();
    hex.hex(0xAB, 4).push(b' ').hex(0, 1);
    assert_eq!(hex.as_bytes(), b"00ab 0");
}
