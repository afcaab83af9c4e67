//! Feeds arbitrary bytes, split at an arbitrary point, through the message
//! decoder with a small limit. Must never panic; whatever decodes must
//! re-encode to a frame that decodes to the same message.
//! Run: `cd protocol/fuzz && cargo +nightly fuzz run decoder`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_protocol::{encode_into, MessageDecoder};

fuzz_target!(|data: &[u8]| {
    let (split, bytes) = match data.split_first() {
        Some((s, rest)) => (*s as usize % (rest.len() + 1), rest),
        None => return,
    };
    let mut dec = MessageDecoder::new(4096);
    for mut part in [&bytes[..split], &bytes[split..]] {
        while !part.is_empty() {
            match dec.push(&mut part) {
                Ok(Some(msg)) => {
                    let wire = encode_into(&msg, 1, 1 << 20, Vec::new()).expect("re-encodes");
                    let mut d2 = MessageDecoder::new(1 << 20);
                    let mut input: &[u8] = &wire;
                    assert_eq!(d2.push(&mut input).expect("decodes"), Some(msg));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
