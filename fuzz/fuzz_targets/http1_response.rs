//! Fuzzes `http1::ResponseParser`: arbitrary bytes must never panic, must
//! never make it hold more than its cap, and must give the same outcome fed
//! whole or in pieces.
#![no_main]

use auth_router_native::http1::{Http1Error, Response, ResponseParser};
use libfuzzer_sys::fuzz_target;

/// Feeds `pieces` in order, then eof; the response or the first error.
fn run<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    max: usize,
    head: bool,
) -> Result<Option<Response>, Http1Error> {
    let mut p = ResponseParser::new(max, head);
    for piece in pieces {
        p.feed(piece)?;
    }
    p.eof()?;
    Ok(p.into_response())
}

fuzz_target!(|data: &[u8]| {
    // First byte: piece size (1-128) and whether the request was HEAD;
    // second byte: the byte cap, in units of 16.
    let [ctl, cap, input @ ..] = data else {
        return;
    };
    let piece = usize::from(ctl & 0x7f) + 1;
    let head = ctl & 0x80 != 0;
    let max = usize::from(*cap) * 16;

    let whole = run(std::iter::once(input), max, head);
    if let Ok(Some(resp)) = &whole {
        assert!(resp.body.len() <= max);
    }
    assert_eq!(run(input.chunks(piece), max, head), whole);
});
