//! Unit tests of the DNS prober: judging answers, the wire exchanges, the system resolver walk.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::{A, CNAME, TXT};

use super::*;
use crate::config::RCODES;

const Q: &str = "svc.example.";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(owner: &str, last: u8) -> Record {
    Record::from_rdata(name(owner), 30, RData::A(A::new(192, 0, 2, last)))
}

fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), 30, RData::CNAME(CNAME(name(target))))
}

fn txt(owner: &str) -> Record {
    Record::from_rdata(name(owner), 30, RData::TXT(TXT::new(vec!["x".into()])))
}

fn response(rcode: ResponseCode, answers: Vec<Record>) -> DnsResponse {
    let mut message = Message::new(7, MessageType::Response, OpCode::Query);
    message.metadata.response_code = rcode;
    message.answers = answers;
    DnsResponse::from_message(message).unwrap()
}

fn judged(qtype: RecordType, answers: Vec<Record>) -> Outcome {
    judge(&name(Q), qtype, &response(ResponseCode::NoError, answers))
}

fn usable(answers: usize) -> Outcome {
    Outcome::Response {
        rcode: ResponseCode::NoError,
        answers,
    }
}

#[test]
fn expectations() {
    let nx = Outcome::Response {
        rcode: ResponseCode::NXDomain,
        answers: 0,
    };
    let nodata = Outcome::NoData { answers: 0 };
    let wrong = Outcome::WrongAnswer { answers: 1 };
    assert!(!nx.meets(None));
    assert!(nx.meets(Some(ResponseCode::NXDomain)));
    assert!(usable(1).meets(None));
    for unusable in [&nodata, &wrong] {
        assert!(!unusable.meets(None), "{unusable:?} is not a resolution");
        // `expect: NOERROR` asks for the rcode only, as before.
        assert!(unusable.meets(Some(ResponseCode::NoError)));
    }
    assert!(!Outcome::Timeout.meets(Some(ResponseCode::NXDomain)));
}

#[test]
fn every_rcode_label_is_in_the_closed_set() {
    for (name, code) in RCODES {
        let label = Outcome::Response {
            rcode: *code,
            answers: 0,
        }
        .rcode_label();
        assert_eq!(label.as_str(), *name);
    }
    for (outcome, label) in [
        (Outcome::NoData { answers: 0 }, "NODATA"),
        (Outcome::WrongAnswer { answers: 1 }, "WRONG_ANSWER"),
        (Outcome::Timeout, "TIMEOUT"),
        (Outcome::NetworkError(String::new()), "NETWORK_ERROR"),
    ] {
        assert_eq!(outcome.rcode_label().as_str(), label, "{outcome:?}");
    }
    assert_eq!(Rcode::of(ResponseCode::Unknown(3000)), Rcode::OTHER);
}

#[test]
fn only_a_record_of_the_type_for_the_name_is_an_answer() {
    assert_eq!(judged(RecordType::A, vec![a(Q, 1)]), usable(1));
    assert_eq!(judged(RecordType::A, vec![a("SVC.Example.", 1)]), usable(1));
    assert_eq!(
        judged(RecordType::A, vec![]),
        Outcome::NoData { answers: 0 }
    );
    assert_eq!(
        judged(RecordType::A, vec![txt(Q)]),
        Outcome::NoData { answers: 1 }
    );
    assert_eq!(
        judged(RecordType::AAAA, vec![a(Q, 1)]),
        Outcome::NoData { answers: 1 }
    );
    assert_eq!(
        judged(RecordType::A, vec![a("other.example.", 1)]),
        Outcome::WrongAnswer { answers: 1 }
    );
    // A non-NOERROR code is reported as such, whatever the answer section holds.
    let nx = response(ResponseCode::NXDomain, vec![cname(Q, "gone.example.")]);
    assert_eq!(
        judge(&name(Q), RecordType::A, &nx),
        Outcome::Response {
            rcode: ResponseCode::NXDomain,
            answers: 1
        }
    );
}

#[test]
fn cname_chains_are_followed_within_the_answer() {
    let chain = vec![
        cname(Q, "b.example."),
        cname("B.example.", "c.example."),
        a("c.example.", 3),
    ];
    assert_eq!(judged(RecordType::A, chain.clone()), usable(3));
    let resp = response(ResponseCode::NoError, chain);
    assert_eq!(
        addresses(&name(Q), RecordType::A, &resp),
        [IpAddr::from([192, 0, 2, 3])]
    );
    // A CNAME query is answered by the CNAME itself.
    assert_eq!(
        judged(RecordType::CNAME, vec![cname(Q, "b.example.")]),
        usable(1)
    );
    // Dangling: the chain ends at a name without an A (NODATA at the end of the chain).
    assert_eq!(
        judged(RecordType::A, vec![cname(Q, "b.example.")]),
        Outcome::NoData { answers: 1 }
    );
    assert_eq!(
        judged(
            RecordType::A,
            vec![cname(Q, "b.example."), txt("b.example.")]
        ),
        Outcome::NoData { answers: 2 }
    );
    // An A off the chain is not the name's.
    let off = vec![cname(Q, "b.example."), a("c.example.", 3)];
    assert_eq!(
        judged(RecordType::A, off.clone()),
        Outcome::WrongAnswer { answers: 2 }
    );
    let resp = response(ResponseCode::NoError, off);
    assert!(addresses(&name(Q), RecordType::A, &resp).is_empty());
}

#[test]
fn cname_loops_and_overlong_chains_are_wrong_answers() {
    let looped = vec![
        cname(Q, "b.example."),
        cname("b.example.", Q),
        a("c.example.", 3),
    ];
    assert_eq!(
        judged(RecordType::A, looped),
        Outcome::WrongAnswer { answers: 3 }
    );
    let chain = |links: usize| -> Vec<Record> {
        let hop = |i: usize| {
            if i == 0 {
                Q.to_owned()
            } else {
                format!("hop{i}.example.")
            }
        };
        let mut records: Vec<Record> = (0..links).map(|i| cname(&hop(i), &hop(i + 1))).collect();
        records.push(a(&hop(links), 9));
        records
    };
    assert_eq!(
        judged(RecordType::A, chain(MAX_CNAME_CHAIN)),
        usable(MAX_CNAME_CHAIN + 1)
    );
    assert_eq!(
        judged(RecordType::A, chain(MAX_CNAME_CHAIN + 1)),
        Outcome::WrongAnswer {
            answers: MAX_CNAME_CHAIN + 2
        }
    );
}

#[test]
fn the_search_walk_stops_at_records_and_walks_on_past_empty_answers() {
    let rc = |rcode| Outcome::Response { rcode, answers: 0 };
    let nodata = Outcome::NoData { answers: 0 };
    let walk = |nodata, servfail| Step::WalkOn { nodata, servfail };
    // Records end the walk, useful or not (libc's res_search sees ancount > 0).
    assert_eq!(
        step(&[Outcome::NoData { answers: 1 }, nodata.clone()]),
        Step::Found
    );
    assert_eq!(step(&[rc(ResponseCode::NXDomain), usable(1)]), Step::Found);
    assert_eq!(step(&[nodata.clone(), nodata.clone()]), walk(true, false));
    assert_eq!(
        step(&[rc(ResponseCode::NXDomain), rc(ResponseCode::NXDomain)]),
        walk(false, false)
    );
    // An empty NOERROR beside an NXDOMAIN: the NXDOMAIN decides.
    assert_eq!(
        step(&[nodata.clone(), rc(ResponseCode::NXDomain)]),
        walk(false, false)
    );
    assert_eq!(step(&[rc(ResponseCode::ServFail)]), walk(false, true));
    assert_eq!(step(&[rc(ResponseCode::Refused)]), Step::Stop);
    assert_eq!(step(&[Outcome::Timeout, Outcome::Timeout]), Step::Stop);
}

/// A resolver on loopback that answers A after `HOLD` with 192.0.2.1, AAAA at once with no
/// record, and drops an AAAA that arrives from the address and port of an A it has not
/// answered yet: the conntrack insert race, which loses the second of two packets one
/// socket sends together. It logs the type and source port of every query.
struct RacyResolver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(RecordType, u16)>>>,
}

const HOLD: Duration = Duration::from_millis(50);

impl RacyResolver {
    async fn start() -> Self {
        let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap());
        let addr = socket.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(Self::serve(socket, log.clone()));
        Self { addr, log }
    }

    async fn serve(socket: Arc<UdpSocket>, log: Arc<Mutex<Vec<(RecordType, u16)>>>) {
        let unanswered = Arc::new(Mutex::new(HashSet::<SocketAddr>::new()));
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(q) = query.queries.first().cloned() else {
                continue;
            };
            log.lock().unwrap().push((q.query_type(), peer.port()));
            let mut reply = Message::response(query.metadata.id, OpCode::Query);
            reply.queries = query.queries.clone();
            if q.query_type() != RecordType::A {
                if !unanswered.lock().unwrap().contains(&peer) {
                    let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
                }
                continue;
            }
            reply.add_answer(Record::from_rdata(
                q.name().clone(),
                30,
                RData::A(A::new(192, 0, 2, 1)),
            ));
            unanswered.lock().unwrap().insert(peer);
            let (socket, unanswered) = (socket.clone(), unanswered.clone());
            tokio::spawn(async move {
                tokio::time::sleep(HOLD).await;
                let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
                unanswered.lock().unwrap().remove(&peer);
            });
        }
    }

    async fn lookup(&self, options: &str) -> (SystemLookup, Vec<(RecordType, u16)>) {
        let mut conf =
            ResolvConf::parse(format!("options timeout:1 attempts:1 {options}\n").as_bytes());
        conf.nameservers = vec![self.addr];
        let deadline = Instant::now() + Duration::from_secs(10);
        let lookup = lookup_system(&conf, &name("race.example."), RecordType::A, deadline).await;
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        (lookup, log)
    }
}

fn family(family: &str, rcode: &str) -> FamilyQuery {
    let family = match family {
        "ipv4" => IpFamily::ipv4,
        _ => IpFamily::ipv6,
    };
    let rcode = *Rcode::ALL
        .iter()
        .find(|r| r.as_str() == rcode)
        .expect("an rcode label");
    FamilyQuery { family, rcode }
}

#[tokio::test]
async fn a_lookups_send_a_and_aaaa_together_from_one_socket() {
    let resolver = RacyResolver::start().await;
    let (lookup, log) = resolver.lookup("").await;
    // Both from one port at once: the AAAA is lost, the wait ends after `timeout` with the A
    // in, and glibc asks both again one after the other.
    let ports: HashSet<u16> = log.iter().map(|(_, port)| *port).collect();
    assert_eq!(ports.len(), 1, "{log:?}");
    let types: Vec<RecordType> = log.iter().map(|(t, _)| *t).collect();
    use RecordType::{A as TA, AAAA as TAAAA};
    assert_eq!(types, [TA, TAAAA, TA, TAAAA]);
    let observation = &lookup.observation;
    assert_eq!(observation.outcome, usable(1));
    assert_eq!(observation.udp_queries, 4);
    assert!(
        observation.duration > Some(Duration::from_secs(1)),
        "{observation:?}"
    );
    assert_eq!(
        lookup.family_queries,
        [
            family("ipv4", "NOERROR"),
            family("ipv6", "TIMEOUT"),
            family("ipv4", "NOERROR"),
            family("ipv6", "NODATA"),
        ]
    );
    assert_eq!(lookup.addresses, [IpAddr::from([192, 0, 2, 1])]);
}

#[tokio::test]
async fn single_request_options_keep_the_aaaa_out_of_the_race() {
    let resolver = RacyResolver::start().await;
    for (options, ports) in [("single-request", 1), ("single-request-reopen", 2)] {
        let (lookup, log) = resolver.lookup(options).await;
        let seen: HashSet<u16> = log.iter().map(|(_, port)| *port).collect();
        assert_eq!(seen.len(), ports, "{options}: {log:?}");
        assert_eq!(lookup.observation.outcome, usable(1), "{options}");
        assert_eq!(lookup.observation.udp_queries, 2, "{options}");
        assert!(
            lookup.observation.duration < Some(Duration::from_secs(1)),
            "{options}: {:?}",
            lookup.observation
        );
        assert_eq!(
            lookup.family_queries,
            [family("ipv4", "NOERROR"), family("ipv6", "NODATA")],
            "{options}"
        );
    }
}

#[tokio::test]
async fn other_types_and_explicit_servers_send_one_query() {
    let resolver = RacyResolver::start().await;
    let mut conf = ResolvConf::parse(b"options timeout:1 attempts:1\n");
    conf.nameservers = vec![resolver.addr];
    let deadline = Instant::now() + Duration::from_secs(5);
    let lookup = lookup_system(&conf, &name("race.example."), RecordType::AAAA, deadline).await;
    assert_eq!(lookup.observation.outcome, Outcome::NoData { answers: 0 });
    assert_eq!(lookup.observation.udp_queries, 1);
    assert!(lookup.family_queries.is_empty());
    let direct = query(
        resolver.addr,
        &name("race.example."),
        RecordType::A,
        QueryOptions::default(),
        deadline,
    )
    .await;
    assert_eq!(direct.outcome, usable(1));
    assert_eq!(direct.udp_queries, 1);
    let log = resolver.log.lock().unwrap().clone();
    let types: Vec<RecordType> = log.iter().map(|(t, _)| *t).collect();
    assert_eq!(types, [RecordType::AAAA, RecordType::A]);
}
