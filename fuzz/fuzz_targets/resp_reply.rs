//! Fuzzes `resp::decode`, the RESP2 reply decoder of the Redis tier:
//! arbitrary bytes must never panic, a reply never claims more bytes than
//! it was given, and a decoded reply decodes to the same from any prefix
//! that holds it whole (more bytes after a reply never change it), while a
//! strict prefix of it only ever asks for more.
#![no_main]

use auth_router_native::resp::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((reply, used))) = decode(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    assert_eq!(decode(&data[..used]), Ok(Some((reply, used))));
    assert_eq!(decode(&data[..used - 1]), Ok(None));
});
