//! Hostile answers: arbitrary bytes carrying a waiting query's ID, and well-formed answers to it
//! (any rcode, records of any type owned by related names, CNAME chains and loops) cut short,
//! flipped and padded. Filing them and judging what decodes never panics, and every outcome is
//! labelled from the closed set.

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use proptest::prelude::*;

use super::*;
use crate::config::QUERY_TYPES;

const NAMES: &[&str] = &[
    "svc.example.",
    "a.svc.example.",
    "b.example.",
    "SVC.Example.",
    ".",
];

fn record() -> impl Strategy<Value = Record> {
    (0..NAMES.len(), 0..NAMES.len(), 0u8..4, any::<u32>()).prop_map(|(owner, to, kind, ttl)| {
        let (owner, to) = (
            Name::from_ascii(NAMES[owner]).unwrap(),
            Name::from_ascii(NAMES[to]).unwrap(),
        );
        let data = match kind {
            0 => RData::A(A::new(192, 0, 2, 1)),
            1 => RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            2 => RData::CNAME(CNAME(to)),
            _ => RData::TXT(TXT::new(vec!["x".into()])),
        };
        Record::from_rdata(owner, ttl, data)
    })
}

/// How a datagram is spoiled before it arrives.
#[derive(Debug, Clone)]
enum Spoil {
    None,
    Cut(usize),
    Flip(Vec<(usize, u8)>),
    Pad(Vec<u8>),
}

fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        Just(Spoil::None),
        any::<usize>().prop_map(Spoil::Cut),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Spoil::Flip),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Spoil::Pad),
    ]
}

fn judge_all(name: &Name, qtype: RecordType, replies: &[Reply]) {
    for reply in replies {
        if let Reply::Answer(response) = reply {
            let outcome = judge(name, qtype, response);
            // Its label is one of the closed set by type; this asks only that judging ends.
            let _ = outcome.rcode_label();
            let _ = addresses(name, qtype, response);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_with_a_waiting_id(
        which in 0..QUERY_TYPES.len(),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let (name, qtype) = (Name::from_ascii("svc.example.").unwrap(), QUERY_TYPES[which]);
        let requests = encode(&questions(&name, qtype), QueryOptions::default()).unwrap();
        for request in &requests {
            let mut replies: Vec<Reply> = requests.iter().map(|_| Reply::Lost).collect();
            let mut datagram = request.request.metadata.id.to_be_bytes().to_vec();
            datagram.extend_from_slice(&tail);
            file_datagram(&datagram, &requests, &mut replies);
            judge_all(&name, qtype, &replies);
        }
    }

    #[test]
    fn well_formed_answers_spoiled(
        which in 0..QUERY_TYPES.len(),
        rcode in 0u16..24,
        truncated in any::<bool>(),
        answers in prop::collection::vec(record(), 0..12),
        spoiled in spoil(),
    ) {
        let (name, qtype) = (Name::from_ascii("svc.example.").unwrap(), QUERY_TYPES[which]);
        let requests = encode(&questions(&name, qtype), QueryOptions::default()).unwrap();
        let request = &requests[0].request;
        let mut message = Message::response(request.metadata.id, OpCode::Query);
        message.queries = request.queries.clone();
        message.metadata.response_code = ResponseCode::from_low(rcode as u8 & 0xf);
        message.metadata.truncation = truncated;
        message.answers = answers;
        let mut datagram = message.to_vec().unwrap();
        let intact = matches!(spoiled, Spoil::None);
        match spoiled {
            Spoil::None => {}
            Spoil::Cut(at) => datagram.truncate(at % (datagram.len() + 1)),
            Spoil::Flip(flips) => {
                let len = datagram.len();
                for (at, bits) in flips {
                    datagram[at % len] ^= bits;
                }
            }
            Spoil::Pad(bytes) => datagram.extend(bytes),
        }
        let mut replies: Vec<Reply> = requests.iter().map(|_| Reply::Lost).collect();
        let said_truncated = file_datagram(&datagram, &requests, &mut replies);
        if intact {
            // The answer to the first query is filed as such, truncation flag and all.
            prop_assert!(matches!(replies[0], Reply::Answer(_)), "{replies:?}");
            prop_assert_eq!(said_truncated, truncated);
        }
        judge_all(&name, qtype, &replies);
    }
}
