//! Golden byte vectors: one committed file per message kind. A wire change
//! shows up as a diff here. Regenerate deliberately with
//! `VIGIL_BLESS=1 cargo test -p vigil-protocol --test golden`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;

use vigil_protocol::{
    encode, Kind, Message, MessageDecoder, DEFAULT_MAX_PAYLOAD, HEADER_LEN, PROTOCOL_VERSION,
};

fn golden_path(kind: Kind) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{}.hex", kind.name()))
}

fn from_hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .flat_map(|l| {
            (0..l.len())
                .step_by(2)
                .map(move |i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
        })
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for line in bytes.chunks(32) {
        for b in line {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
    }
    s
}

#[test]
fn every_kind_has_a_sample() {
    let kinds: Vec<Kind> = common::one_of_each().iter().map(|m| m.kind()).collect();
    assert_eq!(kinds, Kind::ALL.to_vec());
}

#[test]
fn golden_vectors_match() {
    let bless = std::env::var_os("VIGIL_BLESS").is_some();
    let mut mismatched = Vec::new();
    for msg in common::one_of_each() {
        let wire = encode(&msg, PROTOCOL_VERSION).unwrap();
        let path = golden_path(msg.kind());
        let want = to_hex(&wire);
        if bless {
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with VIGIL_BLESS=1 to create)", path.display())
        });
        if have != want {
            mismatched.push(msg.kind().name());
        }
        // The committed bytes also decode back to the sample.
        let bytes: Vec<u8> = have
            .split_whitespace()
            .flat_map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(move |i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
            })
            .collect();
        let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
        let mut input: &[u8] = &bytes;
        assert_eq!(
            dec.push(&mut input).unwrap(),
            Some(msg.clone()),
            "{}",
            msg.kind().name()
        );
        assert!(input.is_empty());
    }
    assert!(
        mismatched.is_empty(),
        "wire format changed for {mismatched:?}; review, then VIGIL_BLESS=1"
    );
}

/// Frames older agents send (kept from before each version change) still
/// decode in a session negotiated at their version, without the parts
/// their version does not carry: old agents in old guest images keep
/// working with a new host.
#[test]
fn older_versions_frames_still_decode() {
    for (version, least) in [(1u8, 5), (2, 13)] {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{version}"));
        let samples = common::one_of_each();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let bytes = from_hex(&text);
            assert_eq!(
                bytes[2],
                version,
                "{}: not a version-{version} frame",
                path.display()
            );
            let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
            dec.set_version(version);
            let mut input: &[u8] = &bytes;
            let msg = dec.push(&mut input).unwrap().unwrap();
            let want = samples.iter().find(|m| m.kind() == msg.kind()).unwrap();
            assert_eq!(msg, common::without_network(want), "{}", path.display());
            // And a new sender in that session sends the same bytes.
            assert_eq!(encode(&msg, version).unwrap(), bytes, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= least, "only {seen} version-{version} samples");
    }
}

/// A version-3 report carries the network; the same report in a version-2
/// session is byte for byte what version 2 sent.
#[test]
fn the_network_rides_only_from_version_3() {
    let r = Message::Report(common::realistic_report());
    let v3 = encode(&r, 3).unwrap();
    let v2 = encode(&r, 2).unwrap();
    assert!(v3.len() > v2.len());
    assert_eq!(v3[HEADER_LEN..v2.len()], v2[HEADER_LEN..]);
    let mut dec = MessageDecoder::new(DEFAULT_MAX_PAYLOAD);
    dec.set_version(3);
    let mut input: &[u8] = &v3;
    assert_eq!(dec.push(&mut input).unwrap(), Some(r));
}
