//! Property tests: random messages round-trip; random bytes never panic the
//! decoder; any length above the limit is rejected before allocation.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use vigil_protocol::{
    encode, encode_into, Decoder, FrameError, Message, MessageDecoder, DEFAULT_MAX_PAYLOAD,
    HEADER_LEN,
};

fn message_from(seed: &[u8]) -> Option<Message> {
    Message::arbitrary(&mut Unstructured::new(seed)).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_messages_round_trip(seed in proptest::collection::vec(any::<u8>(), 0..2048),
                                  version in 1u8..=255) {
        let Some(mut msg) = message_from(&seed) else { return Ok(()) };
        if version < 3 {
            // Older sessions carry no network.
            match &mut msg {
                Message::Report(r) => r.snapshot.network = None,
                Message::ProbeReply(r) => r.snapshot.network = None,
                _ => {}
            }
        }
        let wire = match encode_into(&msg, version, DEFAULT_MAX_PAYLOAD, Vec::new()) {
            Ok(w) => w,
            Err(_) => return Ok(()), // over the limit: refused, not sent
        };
        let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        dec.set_version(version);
        let mut input: &[u8] = &wire;
        let back = dec.push(&mut input).unwrap().unwrap();
        prop_assert!(input.is_empty());
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(encode(&back, version).unwrap(), wire);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                                split in 0usize..4096) {
        let mut dec = MessageDecoder::new(1024);
        let split = split.min(bytes.len());
        for mut part in [&bytes[..split], &bytes[split..]] {
            while !part.is_empty() {
                match dec.push(&mut part) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
        }
    }

    #[test]
    fn valid_header_random_payload_never_panics(kind in 0u8..=20,
                                                payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut wire = vec![b'V', b'G', 1, kind];
        wire.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        wire.extend_from_slice(&payload);
        let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        let mut input: &[u8] = &wire;
        let _ = dec.push(&mut input);
    }

    #[test]
    fn lengths_above_the_limit_are_rejected_without_allocating(limit in 0u32..=1 << 20,
                                                               excess in 1u32..=u32::MAX) {
        let len = limit.saturating_add(excess);
        prop_assume!(len > limit);
        let mut header = vec![b'V', b'G', 1, 4];
        header.extend_from_slice(&len.to_le_bytes());
        let mut d = Decoder::new(limit);
        let mut input: &[u8] = &header;
        prop_assert_eq!(d.push(&mut input), Err(FrameError::TooLong { len, limit }));
        // Nothing past the header was buffered, so nothing was allocated for it.
        prop_assert_eq!(d.pending(), HEADER_LEN);
    }
}
