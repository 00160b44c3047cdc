//! The stored-object envelope (`nx_open_cache::envelope`) on arbitrary bytes: the header parser,
//! the whole-object check, and the streaming digest the stores use.
//!
//! Guarantees checked: no panic; an object is accepted only when it is exactly what `seal` writes
//! for its payload (so no two byte strings open to the same payload); a decoded header encodes back
//! to the bytes it came from; the digest fed in pieces equals the digest of the whole.

use nx_open_cache::envelope::{self, Header, PayloadDigest, HEADER_LEN};

pub fn run(data: &[u8]) {
    let header = Header::decode(data);
    match &header {
        Ok(h) => assert_eq!(h.encode()[..], data[..HEADER_LEN], "decode/encode differ"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match envelope::open(data) {
        Ok(payload) => {
            assert!(header.is_ok(), "opened without a valid header");
            assert_eq!(
                envelope::seal(payload),
                data,
                "accepted a non-canonical object"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    pieces_digest_as_whole(data);
}

/// The stores digest payloads as they stream by, in pieces of any size: the pieces' digest must
/// equal the whole's. The piece sizes come from the input itself.
fn pieces_digest_as_whole(data: &[u8]) {
    let mut whole = PayloadDigest::new();
    whole.update(data);
    let mut pieces = PayloadDigest::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let size = 1 + usize::from(data[i % data.len()]) % 97;
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        pieces.update(piece);
        rest = tail;
        i += 1;
    }
    assert_eq!(pieces.len(), data.len() as u64);
    assert_eq!(pieces.finish(), whole.finish());
}
