//! The VM's one web page: `GET /` (or `HEAD /`) answers 200 with a short text, anything else
//! gets a plain error status. A request is looked at once its head has arrived (an empty line)
//! or the buffer is full; only its first line matters. Pure, and tested on the host.

/// What a request asks for, as far as the VM answers it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Answer {
    /// Not all of the head yet: wait for more.
    Incomplete,
    /// `GET /`: the page.
    Page,
    /// `HEAD /`: the page's head only.
    Head,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// What to answer `request` (the bytes received so far); `full` says no more will fit.
pub fn answer(request: &[u8], full: bool) -> Answer {
    let head_ended =
        request.windows(4).any(|w| w == b"\r\n\r\n") || request.windows(2).any(|w| w == b"\n\n");
    if !head_ended && !full {
        return Answer::Incomplete;
    }
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Answer::BadRequest;
    };
    if !version.starts_with(b"HTTP/1.") || target.is_empty() {
        return Answer::BadRequest;
    }
    // The path, without a query.
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Answer::MethodNotAllowed,
    };
    match (path, head) {
        (b"/", false) => Answer::Page,
        (b"/", true) => Answer::Head,
        _ => Answer::NotFound,
    }
}

/// The status line and headers for `answer`, with the body's length; the caller sends the
/// body after them for [`Answer::Page`].
pub fn head(answer: Answer, body_length: usize, out: &mut super::text::Text<160>) {
    let (status, length): (&[u8], usize) = match answer {
        Answer::Page | Answer::Head => (b"200 OK", body_length),
        Answer::NotFound => (b"404 Not Found", 0),
        Answer::MethodNotAllowed => (b"405 Method Not Allowed", 0),
        Answer::BadRequest | Answer::Incomplete => (b"400 Bad Request", 0),
    };
    out.text(b"HTTP/1.0 ")
        .text(status)
        .text(b"\r\nContent-Type: text/plain\r\nContent-Length: ")
        .decimal(length as u64)
        .text(b"\r\nConnection: close\r\n\r\n");
}
